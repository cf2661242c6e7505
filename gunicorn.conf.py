"""gunicorn settings for every API server started from this directory (`make api`, `make run`, `make dashboard`).

gunicorn reads ./gunicorn.conf.py by itself; flags on its command line
(--bind, --workers, --threads) still win over what is set here.
"""

import sys

reuse_port = sys.platform.startswith("linux")
"""Each worker process listens on its own SO_REUSEPORT socket and the kernel spreads new connections across them.

Without it the workers race to accept() from one shared socket, and a few
keep-alive clients (a load balancer's pool, a benchmark's 8 connections) often
all land in one worker, which then serves alone: here, half the POST rate in
about half the runs. The cost: a second server started on the same port by the
same user joins this one instead of failing with "address in use", and the
connections still queued on a worker's socket when it dies are reset. Linux only:
macOS accepts the option but hands every connection to one socket, which would
be worse than the shared socket.
"""

control_socket_disable = True
"""No `gunicornc` control socket (gunicorn 25.1+ opens one by default).

Nothing here uses it, and its default path is one per user (~/.gunicorn/gunicorn.ctl): every gunicorn
started by the same user (`make api` beside `make dashboard`, the test suite's servers) unlinks the previous
one's socket and binds its own. It also runs an asyncio loop in a thread of the master, stopped and restarted
around every worker fork.
"""
