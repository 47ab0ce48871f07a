# dp_train.py: data-parallel training of a padded LSTM on 2 processes with 2 CPU devices each.
# Start it once per process, with the coordinator's address, the process id and the steps to train:
#   python dp_train.py 127.0.0.1:12355 0 6 & python dp_train.py 127.0.0.1:12355 1 6; wait
# Both save a checkpoint every 3 steps into ./ckpt; started again, both resume from the newest.
import sys

import jax
import numpy as np

import rnnjax as rj  # importing starts no JAX backend: jax.distributed.initialize still comes first

coordinator, process_id, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_num_cpu_devices", 2)  # 2 CPU devices per process
jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
jax.distributed.initialize(coordinator_address=coordinator, num_processes=2, process_id=process_id,
                           initialization_timeout=60, shutdown_timeout_seconds=30)

T, B, D, H = 6, 8, 3, 8  # time steps, global batch (4 per process, 2 per device), input, hidden
cell = rj.lstm(D, H)


def loss_fn(params, batch, key):
    xs, targets, lengths = batch
    _, hs = rj.scan(cell.step, params["cell"], cell.initial_carry((xs.shape[1],)), xs, lengths=lengths)
    return rj.sequence_mse(hs @ params["head"], targets, lengths=lengths)


def global_batch(step):  # the same in every process; each one passes on its own rows
    rng = np.random.default_rng(step)
    xs, targets = rng.normal(size=(T, B, D)), rng.normal(size=(T, B, 1))
    return xs.astype(np.float32), targets.astype(np.float32), np.array([6, 5, 4, 3, 6, 2, 1, 6])


opt = rj.make_optimizer(0.05)
train_step = rj.make_train_step(loss_fn, opt)
mesh = rj.data_mesh()  # the 4 devices of both processes, axis "data"
k1, k2 = jax.random.split(jax.random.key(0))
params = {"cell": cell.init(k1), "head": 0.5 * jax.random.normal(k2, (H, 1))}
state = rj.replicate(rj.init_train_state(params, opt, jax.random.key(1)), mesh)  # equal in every process
mine = slice(4 * jax.process_index(), 4 * jax.process_index() + 4)  # this process's rows

with rj.Checkpoints("ckpt") as ckpt:
    if ckpt.latest_step is not None:
        state, _ = ckpt.restore(state)  # every process restores, into the replicated sharding
    while int(state.step) < steps:
        xs, targets, lengths = global_batch(int(state.step))
        local = xs[:, mine], targets[:, mine], lengths[mine]
        batch = rj.shard_batch(local, mesh, axis=(1, 1, 0))  # the global batch, split over 4 devices
        state, metrics = train_step(state, batch)
        print(f"process {jax.process_index()} of {jax.process_count()} ({jax.local_device_count()} of "
              f"{jax.device_count()} devices): step {int(state.step)} loss {float(metrics['loss']):.9g}")
        if int(state.step) % 3 == 0:
            ckpt.save(state)  # every process saves; Orbax writes one checkpoint for all of them
    print(f"process {jax.process_index()}: checkpoints {ckpt.steps}")
