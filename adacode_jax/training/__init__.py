"""Training the three stages.

- ``loop``: ``train_and_evaluate`` and the loop, which calls the named steps below;
- ``stages``: the config a stage runs with, and stage chaining (I -> II -> III initialisation);
- ``networks``: building the networks and jitting the step with shardings;
- ``steps``: the pure train step of every stage; ``losses``: the pure loss terms;
- ``checkpoints``: resume, damaged-checkpoint recovery, saving (disk full included), exports;
- ``workdir``: the lock, multi-host agreement, the resume check, log truncation;
- ``preemption``: stopping at a step on SIGTERM/SIGINT; ``logs``: metrics and pictures;
- ``validation``: the validation set and its scores; ``sharding``: meshes and partition rules;
- ``console``: what a run shows on the terminal; ``summaries``: TensorBoard events (tensorboardX,
  no TensorFlow) and the rate and profile hooks.
"""
