"""The tagging worker: consume track references, decode, infer, write tags, commit.

``loop`` (poll → collect a batch → process → settle → commit, on one screen) uses one module
per job: ``poller`` (poll, pause, batches), ``process`` (parse → vet → decode → windows →
``infer``), ``job`` (one micro-batch and its state), ``settle`` (DLQ + Redis + counts, the one
write path), ``checkpoint`` (offsets, commit, lag), ``retry`` (the backoff policy),
``inflight`` + ``rebalance`` (partition moves), with ``metrics``/``health`` beside it.
Nothing here imports ``training``: the model artifact is the only coupling.
"""
