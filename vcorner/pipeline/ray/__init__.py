"""``vcorner batch --ray``: the same per-image work on Ray Data, across the CPUs or GPUs of a cluster.

The dataset is built from the plan: one row per image holding its path **and its centres** (:mod:`.codec`), so
nothing but an image's own centres reaches the actor that does it. Light read tasks add each file's bytes; a pool
of stateful actors (``compute=ActorPoolStrategy``; :mod:`.actor`), each holding one inference session of the model
the driver resolved, takes several images a call, decodes them from the bytes (no temporary files), infers all
their patches together in full batches and finds their corners, writing any ``--json``/``--vis`` files straight
into OUT (shared storage on a cluster). The driver (:mod:`.driver`) streams the result rows back in plan order and
hands them to the local batch's one writer, so ``corners.csv`` and ``errors.csv`` are the local batch's, byte for
byte; it never holds pixels or maps, only the plan (paths and centres) and the journal's index.

Failures: a file that cannot be read or decoded fails that image only. An actor that dies (killed, out of
memory) is restarted and its call retried (:data:`.driver.ACTOR_RETRIES`); a call that still fails is skipped and
its images are reported in ``errors.csv``. An unreachable cluster address fails in one line
(:func:`.cluster.connect`).

Resources (:mod:`.resources`): the read tasks need CPUs too. Actors that held every CPU starved them and the batch
hung forever, so the actors share what the cluster has less a reserve for the reads, each running its ONNX Runtime
session on its share of the cores; a combination that cannot fit is refused in one line before anything starts. A
watchdog (:mod:`.watchdog`) stops a batch in which no image has come back for ``stall_s`` seconds with a one-line
error naming the stuck stage. Ray Data's own progress lines stay out of the terminal unless ``-v``.

Nothing here imports Ray at module level: ``import ray`` happens in :func:`.cluster.import_ray`.
"""
