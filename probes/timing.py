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


_SLEEP_CYCLES_PER_MS = {}


def _sleep_cycles_per_ms(torch):
    """torch.cuda._sleep spins for a number of GPU clock cycles: calibrated once per device by events."""
    dev = torch.cuda.current_device()
    if dev not in _SLEEP_CYCLES_PER_MS:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(100_000)
        start.record()
        torch.cuda._sleep(2_000_000)
        end.record()
        torch.cuda.synchronize()
        _SLEEP_CYCLES_PER_MS[dev] = 2_000_000 / max(start.elapsed_time(end), 1e-3)
    return _SLEEP_CYCLES_PER_MS[dev]


def cold_gpu_times(fns, reps, *, warmup=2, flush_bytes=256 << 20, lead_ms=0.4):
    """GPU times (ms) of each function in `fns`, measured in turn rep by rep (fn 0, fn 1, ..., fn 0, fn 1 ...)
    so that clock drift touches all alike; returns one list of `reps` times per function.
    Each timed call starts with a cold L2 (a `flush_bytes` buffer is zeroed first, as triton.testing.do_bench
    does) and is bracketed by CUDA events around the call alone. Before the start event the GPU sleeps for
    ~lead_ms (torch.cuda._sleep), so the host has enqueued the call while the GPU was still busy: the events
    time the kernels, not the host's launch path (with do_bench alone a Python launcher slower than the L2
    flush, ~0.1 ms per call, leaves the GPU idle between the start event and the kernel: measured in the
    handoff diagnostics, a 29 us kernel read as 54 us)."""
    import torch

    cache = torch.empty(flush_bytes, dtype=torch.uint8, device="cuda")
    cycles = int(lead_ms * _sleep_cycles_per_ms(torch))
    for _ in range(warmup):
        for fn in fns:
            fn()
    events = [[(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
              for _ in fns]
    for r in range(reps):
        for f, fn in enumerate(fns):
            cache.zero_()
            torch.cuda._sleep(cycles)
            start, end = events[f][r]
            start.record()
            fn()
            end.record()
    torch.cuda.synchronize()
    return [[start.elapsed_time(end) for start, end in evs] for evs in events]


def host_launch_us(fn, calls=20):
    """Host time of one call (microseconds, mean of `calls` calls, no synchronisation between them): what
    the Python launch path costs, apart from the GPU time."""
    import torch

    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - start) / calls * 1e6
    torch.cuda.synchronize()
    return host


def graph_call_times(fns, *, calls=20, replays=10, lead_ms=0.4):
    """Kernel time per call (ms) of each function, by CUDA-graph replay: fn(i) for i in range(calls) is run
    once eagerly (compiles, allocates workspaces), then captured into one graph per function (so call i can
    read its own inputs, e.g. its own weight matrix), and the graphs are replayed `replays` times in turn
    (fn 0's graph, fn 1's, ... so that clock drift touches all alike), each replay between CUDA events;
    returns per function the `replays` values of (replay time / calls).
    The host is not inside: a replay is one launch, and the GPU sleeps ~lead_ms before the start event
    (as in cold_gpu_times) while the host enqueues it. What is inside: the calls' kernels back to back, with
    the gaps a graph leaves between kernels, and the L2 as the calls leave it (no flush: the caller decides
    what stays cached, e.g. by rotating weights larger than L2 together)."""
    import torch

    for fn in fns:
        for i in range(calls):
            fn(i)
    torch.cuda.synchronize()
    graphs = []
    for fn in fns:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(calls):
                fn(i)
        graphs.append(g)
    cycles = int(lead_ms * _sleep_cycles_per_ms(torch))
    for g in graphs:
        g.replay()
    events = [[(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(replays)]
              for _ in fns]
    for r in range(replays):
        for f, g in enumerate(graphs):
            torch.cuda._sleep(cycles)
            start, end = events[f][r]
            start.record()
            g.replay()
            end.record()
    torch.cuda.synchronize()
    times = [[start.elapsed_time(end) / calls for start, end in evs] for evs in events]
    del graphs
    return times
