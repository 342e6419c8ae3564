from . import test_dispatcher_patch
