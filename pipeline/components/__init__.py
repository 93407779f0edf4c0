"""Training components, one concept a module; pipeline/train.py assembles them around the model.

    distributed   where this process sits (torchrun, Slurm, submitit, one process), its device,
                  and preemption as a context manager agreed across ranks
    engine        the DeepSpeed config and engine (AdamW + schedule) from a TrainConfig
    lr_schedule   linear warmup then cosine, counted in optimizer steps
    ema           exponential moving average of each rank's parameter storage
    checkpoint    the run folder: step_N checkpoints, COMPLETE markers, retention, consolidated
                  weights, resolving init_from / --pretrained, the weights to export
    metrics       MLflow run per job, stdout lines, throughput and MFU windows
"""
