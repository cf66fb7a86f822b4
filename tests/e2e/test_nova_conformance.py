"""After every other e2e test: the Nova responses the devcloud gave the real
rally CLI (rally-openstack, novaclient) conform to tempest's schemas."""

from conformance_report import \
    test_every_nova_response_of_the_session_conforms  # noqa: F401
