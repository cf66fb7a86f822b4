"""HTTP layer of the devcloud: one WSGI app for keystone, nova, neutron,
glance (and the devcloud's own admin endpoints)."""
