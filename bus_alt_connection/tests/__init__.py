from . import test_bus_dispatcher
from . import test_cron_runner
