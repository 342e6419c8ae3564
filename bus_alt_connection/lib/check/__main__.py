"""``python -m odoo.addons.bus_alt_connection.lib.check -c odoo.conf [--json]``"""

import sys

from .command import main

sys.exit(main())
