# benches/ramdisk.py: the RAM disk of examples/ramdisk.rhai written as an
# nbdkit python plugin, for scripts/bench (nbdkit python benches/ramdisk.py size=256M).
import nbdkit

API_VERSION = 2
disk = None
size = 64 * 1024 * 1024


def config(key, value):
    global size
    if key == "size":
        size = nbdkit.parse_size(value)
    else:
        raise RuntimeError("unknown parameter " + key)


def config_complete():
    global disk
    disk = bytearray(size)


def thread_model():
    return nbdkit.THREAD_MODEL_PARALLEL


def open(readonly):
    return 1


def get_size(h):
    return len(disk)


def pread(h, buf, offset, flags):
    end = offset + len(buf)
    buf[:] = disk[offset:end]


def pwrite(h, buf, offset, flags):
    end = offset + len(buf)
    disk[offset:end] = buf


def can_multi_conn(h):
    return True
