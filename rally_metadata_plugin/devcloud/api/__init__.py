"""HTTP layer of the devcloud: one WSGI app for keystone, nova, neutron,
glance (and the devcloud's own admin endpoints).

One module per service; its handlers parse and validate a request, call
typed methods of the service's part of :mod:`..model` (never handing it a
request body, never reading its tables) and serialise the result.
:mod:`.app` dispatches (through :mod:`.urls`) and renders errors,
:mod:`.base` is what the services share.
"""
