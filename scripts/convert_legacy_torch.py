#!/usr/bin/env python3
"""Convert a legacy (non-zip) torch pickle state_dict to safetensors, with no torch and no numpy.

Why: the minimal libtorch install used by clsflow cannot be imported from Python, and the
EfficientNet-Lite0 ImageNet weights ship as a legacy torch pickle. The legacy format is a chain of
pickles (magic number, protocol version, system info, the object, the storage keys) followed by
the raw storages, each prefixed by its element count as little-endian int64.

Usage: convert_legacy_torch.py INPUT.pth OUTPUT.safetensors
Only float32 tensors with contiguous layouts are expected; anything else is a clear error.
"""
import array
import collections
import itertools
import json
import os
import pickle
import struct
import sys

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL = 1001
# storage class name -> (safetensors dtype, element size)
STORAGE_TYPES = {
    "FloatStorage": ("F32", 4),
    "DoubleStorage": ("F64", 8),
    "HalfStorage": ("F16", 2),
    "LongStorage": ("I64", 8),
    "IntStorage": ("I32", 4),
    "ByteStorage": ("U8", 1),
}


# safetensors dtype -> array typecode of the same width (half floats are copied as raw 16-bit words)
ARRAY_CODES = {"F32": "f", "F64": "d", "F16": "H", "I64": "q", "I32": "i", "U8": "B"}


def gather(storage, t, name, path):
    """Copy a strided view of `storage` into a contiguous row-major array."""
    last = t.offset + sum((s - 1) * st for s, st in zip(t.size, t.stride) if s > 0)
    if last >= len(storage):
        raise Fail(f"{path}: tensor {name} runs past its storage (corrupted file?)")
    out = array.array(storage.typecode)
    for idx in itertools.product(*(range(s) for s in t.size)):
        out.append(storage[t.offset + sum(i * st for i, st in zip(idx, t.stride))])
    return out


class Fail(Exception):
    pass


class StorageRef:
    def __init__(self, kind, key, numel):
        self.kind, self.key, self.numel = kind, key, numel


class TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


class StorageType:
    def __init__(self, name):
        self.name = name


def rebuild_tensor_v2(storage, offset, size, stride, *_rest):
    return TensorRef(storage, offset, size, stride)


class LegacyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return rebuild_tensor_v2
        if module == "torch" and name in STORAGE_TYPES:
            return StorageType(name)
        raise Fail(f"unsupported pickled object {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, root_key, location, numel, view_metadata)
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise Fail(f"unsupported persistent id {pid!r}")
        kind, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(kind, StorageType):
            raise Fail(f"unsupported storage type {kind!r}")
        if pid[5] is not None:
            raise Fail("storage views are not supported")
        return StorageRef(kind.name, key, numel)


def read_state_dict(path):
    with open(path, "rb") as f:
        if pickle.load(f) != MAGIC:
            raise Fail(f"{path}: not a legacy torch file (bad magic number)")
        if pickle.load(f) != PROTOCOL:
            raise Fail(f"{path}: unsupported legacy protocol version")
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", False):
            raise Fail(f"{path}: big-endian files are not supported")
        obj = LegacyUnpickler(f).load()
        keys = pickle.load(f)
        blobs = {}
        for key in keys:
            (numel,) = struct.unpack("<q", f.read(8))
            blobs[key] = (numel, f.tell())
            # element size is known from the tensors that use the storage
            sizes = {t.storage.kind for t in obj.values() if t.storage.key == key}
            if len(sizes) != 1:
                raise Fail(f"{path}: storage {key} used with several dtypes")
            elem = STORAGE_TYPES[sizes.pop()][1]
            f.seek(numel * elem, os.SEEK_CUR)
        raw = {}
        for name, t in obj.items():
            dtype, elem = STORAGE_TYPES[t.storage.kind]
            numel, start = blobs[t.storage.key]
            f.seek(start)
            storage = array.array(ARRAY_CODES[dtype])
            data = f.read(numel * elem)
            if len(data) != numel * elem:
                raise Fail(f"{path}: file ends inside the storage of tensor {name} (truncated?)")
            storage.frombytes(data)
            raw[name] = (dtype, list(t.size), gather(storage, t, name, path).tobytes())
        return raw


def write_safetensors(tensors, path):
    header, offset = {}, 0
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in sorted(tensors):
            f.write(tensors[name][2])
    os.replace(tmp, path)  # atomic: a failed run leaves no half-written file


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        tensors = read_state_dict(sys.argv[1])
        write_safetensors(tensors, sys.argv[2])
    except (Fail, OSError, pickle.UnpicklingError, EOFError) as e:
        print(f"convert_legacy_torch: {e}", file=sys.stderr)
        return 1
    print(f"converted {len(tensors)} tensors: {sys.argv[1]} -> {sys.argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
