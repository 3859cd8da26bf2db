"""The bundled load client: ``ringcast loadtest ws://127.0.0.1:8080/bench ...``.

It drives its sockets through `ringcast.ringio` and does its per-delivery work
in C (`scanner`, over the ``_wsscan`` extension); it uses nothing of the server.

Modules: `client` (`LoadTest`: connects, publishes, counts; `run_load_test`),
`options` (`Options`, `LoadError`), `connector` (TCP connects without blocking,
source addresses), `handshake` (the WebSocket upgrade), `http_publish` (HTTP
publishing), `scanner` (the C scanner), `storm` (drop subscribers mid-run, time
their return), `resume` (``--resume-storm``: ringcast.v1 subscribers dropped and
resumed; its parts `resume_options`, `resume_ws`, `resume_connections`, `resume_counts`,
`resume_run`, `resume_report`), `team` (one run over several processes) and `wire`
(what those processes tell each other), `record` (what a run recorded: `RunRecord`, `Tally`),
`report` (the result and its text), `target` (URL and loopback guard), `procstat`
(/proc sampling), `plot` (matplotlib, optional), `cli` (the subcommand). The open-files
limit is raised by `ringcast.fdlimit`, shared with the server. This package
imports none of them, so that importing it (the CLI does, for every command)
costs nothing and works before ``_wsscan`` is built.
"""
