"""Benchmarks: Class Map Explorer against the physical limit (a bare forward pass) and the tools users would pick.

``python -m bench`` (``./dev bench``) runs them all (about 10 minutes on 2 CPU cores), prints each table as it is
measured and writes BENCHMARKS.md; ``--quick`` is a one-minute smoke run, ``--only`` picks benchmarks:

- ``bench.conversion``  0. the converted head vs the trunk, and vs the seed's literal k x k convolution;
- ``bench.pipeline``    1. end-to-end analysis vs a bare forward; 2. a slider move vs a forward;
- ``bench.peers``       3. pytorch-grad-cam's GradCAM and torch-cam's CAM on the same top-5 classes;
- ``bench.memory``      4. peak RSS of analysing large uploads, each in a fresh process;
- ``bench.live``        5. webcam frames per second; 6. app latency through ``gradio_client``.

``bench.timing`` holds the measuring rules (interleaved rounds, medians, paired ratios) and ``bench.report`` the
tables. ``bench.quality`` (map quality on labelled photos) is separate: ``python -m bench.quality``.
"""
