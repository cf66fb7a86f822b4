"""How much the devcloud's servers take on at once, and what they do past it.

Each bound keeps the devcloud's threads and file descriptors finite whatever
the load; past it, a server answers the way a real one does when full (slowly,
or with 503), and recovers by itself when the load goes away.
:class:`~.config.DevCloudConfig` takes every one of them as a field.
"""

#: waitress worker threads for the APIs. API calls are short (the model holds
#: its lock for microseconds); a handful of workers keeps up with rally at
#: concurrency 200.
API_THREADS = 8
#: Open API connections before waitress stops accepting (new clients then
#: wait in the listen backlog). Rally keeps a keep-alive connection per
#: client per scenario thread (nova, neutron, keystone, glance), so 200
#: scenario threads mean some 800 idle connections; an idle one costs a file
#: descriptor only.
API_CONNECTIONS = 2000
#: An idle API connection is closed after this many seconds. Longer than a
#: scenario thread goes without an API call (a baseline wait alone may take a
#: minute): a close that crosses the client's next request on a reused
#: connection resets it, and keystoneauth does not retry a reset (seen once
#: in 200 iterations when this was 60 s). Idle connections cost a descriptor
#: each, within API_CONNECTIONS.
API_IDLE_SECONDS = 600

#: Open metadata connections, every guest's endpoint together (held ``hang``
#: requests included). Past it a new connection gets 503 and is closed, what
#: nova's metadata API says behind haproxy when its backends are full.
METADATA_CONNECTIONS = 4096
#: An idle keep-alive metadata connection is closed after this many seconds
#: (the guests' probes send one request per connection anyway).
METADATA_IDLE_SECONDS = 5.0

#: Open SSH connections, every guest together. At the limit the gateway stops
#: accepting until some close (new clients wait in the backlog, as with an
#: sshd at its MaxStartups); each open one costs a thread (paramiko's).
SSH_CONNECTIONS = 512
#: Commands running at once over SSH, every guest together (a thread each).
SSH_COMMANDS = 256
#: How long an exec request waits for a free command slot before it is refused.
SSH_COMMAND_SLOT_WAIT = 10.0
