from . import test_dispatcher_patch
from . import test_cron_patch
