"""The persistent compilation cache: a second process loads compiled programs instead of compiling."""

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import jax, jaxgmm
    jaxgmm.enable_compilation_cache(sys.argv[1])
    from jax._src import monitoring
    events = []
    monitoring.register_event_listener(lambda name, **kw: events.append(name))
    t1 = time.perf_counter()
    result = jaxgmm.fit(jax.random.key(0), jaxgmm.load_faithful(), 2, max_iter=31)
    print(json.dumps(dict(hits=events.count("/jax/compilation_cache/cache_hits"),
                          misses=events.count("/jax/compilation_cache/cache_misses"),
                          fit_s=time.perf_counter() - t1, ll=float(result.log_likelihood))))
    """
)


def run(cache_dir):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(cache_dir)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_reads_compiled_programs_from_the_cache(tmp_path):
    first = run(tmp_path)
    files = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert first["misses"] >= 1 and files, "the first process should compile and write the cache"
    second = run(tmp_path)
    assert second["hits"] >= 1 and second["misses"] == 0, second
    assert {p.name for p in tmp_path.rglob("*") if p.is_file()} == files  # nothing new had to be compiled
    assert second["ll"] == first["ll"]
