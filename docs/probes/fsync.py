"""fsync cost of a 4 KiB write on the file system under DIR, overwriting and extending.

Run: python3 docs/probes/fsync.py DIR   (e.g. /tmp, or /dev/shm for tmpfs)
"""
import os, sys, time, statistics
d = sys.argv[1]; n = 400
p = os.path.join(d, "fsync-probe")
fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
os.write(fd, b"\0" * (4096 * 64)); os.fsync(fd)
over = []
for i in range(n):
    os.pwrite(fd, os.urandom(4096), 4096 * (i % 64))
    t = time.perf_counter(); os.fsync(fd); over.append((time.perf_counter() - t) * 1e6)
ext = []
for i in range(n):
    os.pwrite(fd, os.urandom(4096), 4096 * (64 + i))
    t = time.perf_counter(); os.fsync(fd); ext.append((time.perf_counter() - t) * 1e6)
os.close(fd); os.unlink(p)
q = lambda v, x: sorted(v)[int(len(v) * x)]
print(f"{d}: overwrite p50 {statistics.median(over):.0f} p99 {q(over,.99):.0f} us; extend p50 {statistics.median(ext):.0f} p99 {q(ext,.99):.0f} us")
