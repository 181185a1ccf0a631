"""gunicorn settings for gmp-mes: ``gunicorn -c config/gunicorn.conf.py 'gmp_mes:create_app()'``.

The scan benchmark (bench/bench_scans.py) serves the app and its reference route with
exactly these settings, so what is measured is what is deployed. Command-line options
(``-w``, ``-b``) override the values here. Put a buffering reverse proxy (nginx) in
front, as gunicorn's own documentation advises for sync workers.
"""

from __future__ import annotations

import os

bind = os.environ.get("GMP_MES_WEB_BIND", "127.0.0.1:8000")
# Sync workers serve one request at a time, each in its own process: a request never
# waits for the GIL behind another one, so latency stays even under load (threads in
# one process made the slowest 1% of scans two to three times slower). Size the pool
# to the number of workstations and bedside devices working at the same moment.
worker_class = "sync"
workers = int(os.environ.get("GMP_MES_WEB_WORKERS", "16"))
# A request still running after this long is a fault: its worker is restarted. The
# database bounds come first (settings db_connect_timeout + db_network_timeout, 40 s by
# default): a request cut off from PostgreSQL answers 503 before its worker is killed.
timeout = 60
graceful_timeout = 30
