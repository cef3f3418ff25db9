"""The daemon and its wiring: what reads events, evaluates them and hands actions on.

The hot path of ``engine run``: ``listener`` (the NOTIFY doorbell), ``cursor`` (the
gap-safe read of the next batch), ``event_rows`` (a row as the event rules see),
``unusual`` (event anomaly checks), ``evaluator`` (the match and step loop),
``state_store`` (stateful rules' state), ``action_rows`` (the queued action rows), all
committed in one transaction, then ``dispatcher`` (one RQ job per queued row, and the
sweep); ``daemon`` runs them, ``rulebook`` holds the rules, ``retention`` the background
retention and statistics, ``http`` /metrics, /healthz and /readyz. Around it: ``cli``,
``config``, ``logs``, ``json_text``, ``migrate``, ``worker`` (``engine worker``),
``status``, ``deadletters``, ``emit`` and ``backtest``.

This package never decides what a rule means (that is ``rules``) and never executes an
action (that is ``actions``, which ``engine worker`` runs); dev tooling lives in
``devkit``.
"""
