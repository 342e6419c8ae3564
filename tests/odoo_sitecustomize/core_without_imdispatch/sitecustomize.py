"""A test fixture: a real Odoo whose bus lacks what Odoo 20.0's lacks.

On ``PYTHONPATH``, Python runs this at start-up, before Odoo. Once core's
``odoo.addons.bus.models.bus`` has run, its ``ImDispatch`` class is gone
(the dispatcher object it made stays, so Odoo's own websocket code loads),
as in Odoo 20.0, whose rewritten bus has no ``ImDispatch``.
"""

import importlib.abc
import importlib.util
import sys

TARGET = "odoo.addons.bus.models.bus"


class WithoutImDispatch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None:
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                del module.ImDispatch

            spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, WithoutImDispatch())
