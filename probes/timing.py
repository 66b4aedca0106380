"""Timing shared by the probes: CUDA events on a GPU, perf_counter on a CPU; warm-up, then one
measurement per run, summarised by the median. Copy bandwidth is measured with the same method so that
a kernel's rate can be given as a fraction of what the device can stream in the same session."""
import statistics
import time


def time_runs(launch, runs, *, device, warmup=3):
    """Call `launch(i)` for i in range(runs) (after `warmup` calls of `launch(0)`) and return the
    per-run times in milliseconds. On a GPU each run is bracketed by CUDA events on the current stream,
    so launch overhead between runs is not counted and nothing is synchronised until the end."""
    for _ in range(warmup):
        launch(0)
    if device == "cpu":
        times = []
        for i in range(runs):
            start = time.perf_counter()
            launch(i)
            times.append((time.perf_counter() - start) * 1e3)
        return times
    import torch

    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(runs)]
    for i, (start, end) in enumerate(events):
        start.record()
        launch(i)
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in events]


def median(values):
    return statistics.median(values)


def copy_bandwidth_gbps(nbytes, *, device, runs=30):
    """Device-to-device copy rate of an `nbytes` buffer, counting bytes read plus bytes written."""
    import torch

    src = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = median(time_runs(lambda i: dst.copy_(src), runs, device=device))
    return 2 * src.numel() / (ms * 1e-3) / 1e9
