from . import bus_check
