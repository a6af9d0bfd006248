"""Where the disk tier's time goes on this machine: page-cache write/read rates of fresh and
reused files in the temp dir, then fwd/bwd seconds of one seed batch for cpu/disk tiers."""
import os, sys, time, tempfile, numpy as np
blk = np.random.rand(64 * 8 * 3288 * 2 // 8).view(np.uint8); nblk = 31; mv = memoryview(blk)
out = np.empty_like(blk); mo = memoryview(out); d = tempfile.gettempdir()
print("tmp", d, os.statvfs(d).f_bsize)
for rep in range(3):
    p = os.path.join(d, f"probe{rep}.bin"); fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, nblk * blk.nbytes)
    t = time.perf_counter(); [os.pwrite(fd, mv, j * blk.nbytes) for j in range(nblk)]; tw = time.perf_counter() - t
    t = time.perf_counter(); [os.pwrite(fd, mv, j * blk.nbytes) for j in range(nblk)]; tw2 = time.perf_counter() - t
    t = time.perf_counter(); [os.preadv(fd, [mo], j * blk.nbytes) for j in range(nblk)]; tr = time.perf_counter() - t
    t = time.perf_counter(); os.close(fd); os.remove(p); tc = time.perf_counter() - t
    gb = nblk * blk.nbytes / 1e9
    print(f"fresh write {gb/tw:.2f} GB/s, rewrite {gb/tw2:.2f} GB/s, read {gb/tr:.2f} GB/s, close+rm {tc*1e3:.1f} ms")
