"""``python -m odoo.addons.bus_alt_connection.lib.check -c odoo.conf [--json]``"""

from .command import main

raise SystemExit(main())
