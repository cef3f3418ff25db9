"""The daemon and its wiring: config, db, migrate, listener, evaluator loop, dispatcher,
http endpoints and the command line."""
