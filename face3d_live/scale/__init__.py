"""Scale-out on Ray: library jobs (`face3d-live process INPUTS… --ray`) and the HTTP service
(`face3d-live serve`). Ray is an optional extra (``pip install 'face3d-live[ray]'``).

The same facade and executor run inside Ray: actors own models (loaded once), tasks own inputs.

- ``config.py``: the typed options (``BatchConfig``, ``ServeConfig``); no Ray.
- ``inputs.py``: INPUTS → videos and photo sets (folders, list files, globs), content hashes, job keys; no Ray.
- ``work.py``: one video (or chunk of one) / a batch of photos → the ``process`` outputs, written to a
  staging folder and renamed into place (retries are idempotent); no Ray.
- ``model_runner.py``: a face model behind the multi-stream ``InferenceExecutor``, callable from any
  thread, and an asyncio batcher that gathers concurrent calls into executor batches; no Ray.
- ``actors.py``, ``batch.py``, ``cluster.py``: the Ray job (model actors per GPU, input workers, progress).
- ``http_api.py``, ``metrics.py``, ``serve_app.py``: the Ray Serve service.

Only this package, ``cli/serve.py`` and the ``bench`` modules for it import Ray, always inside functions
or modules that are themselves imported lazily.
"""
