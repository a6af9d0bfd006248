"""cProfile of the main thread over 3 seed iterations of one tier (after 2 warm-ups)."""
import cProfile, pstats, sys, time
from seedrun import observed_problem, iteration
p, dev = observed_problem('seed')
dtype, storage = sys.argv[1], sys.argv[2]
it = iteration(p, dev, storage, dtype)
for _ in range(2): it()
pr = cProfile.Profile(); t = time.perf_counter(); pr.enable()
for _ in range(3): it()
pr.disable(); print(storage, dtype, 'per iter', (time.perf_counter() - t) / 3)
st = pstats.Stats(pr); st.sort_stats('tottime').print_stats(14)
