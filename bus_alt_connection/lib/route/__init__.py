"""Where the listeners connect: the route, the options, libpq parameters."""
