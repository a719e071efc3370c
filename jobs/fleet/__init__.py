"""The worker fleet on a Ray cluster (``manage.py run_ray_fleet``): Ray places, restarts and grows
today's GpuWorkers; claims, fences, parts and finalize stay exactly as they are.

``ray_fleet`` is the driver (one process, anywhere that reaches the cluster and the database);
``actor`` is what runs in each Ray actor: one GpuWorker on one GPU. Ray is an optional dependency
(requirements-ray.txt): nothing outside this package imports it (an import-linter contract).
"""
