#!/usr/bin/env python3
"""Convert a PyTorch .pth checkpoint (legacy pre-1.6 *or* zip format) to .safetensors
WITHOUT importing torch: a restricted unpickler that only rebuilds tensors/OrderedDicts.
usage: pth_to_safetensors.py IN.pth OUT.safetensors

Copied from the team's reference (shared/reference/weights-tools/pth_to_safetensors.py).
One change: the output is made byte-for-byte deterministic. safetensors (checked with 0.8.0)
keeps `__metadata__` in a Rust HashMap, so the order of its keys in the JSON header changes
from run to run (randomised hashing), and with it the file's sha256. `save_deterministic`
serialises with safetensors, then rewrites only the `__metadata__` object with its keys in
the order given (here: source, format), which is what the published hashes correspond to.
The header length, padding, tensor order and data are untouched (asserted).
"""
import collections, io, json, pickle, struct, sys, zipfile
import numpy as np
from safetensors.numpy import save as st_save, load as st_load

DT = {'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
      'LongStorage': np.int64, 'IntStorage': np.int32, 'ShortStorage': np.int16,
      'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
      'BFloat16Storage': None}

class _Lazy:  # tensor whose storage is filled in later
    def __init__(s, key, off, size, stride): s.key, s.off, s.size, s.stride = key, off, tuple(size), tuple(stride)

def _rebuild(storage, off, size, stride, *_a):
    key = storage
    return _Lazy(key, off, size, stride)

class _U(pickle.Unpickler):
    def __init__(s, f, storages): super().__init__(f); s.st = storages
    def find_class(s, mod, name):
        if mod == 'torch._utils' and name in ('_rebuild_tensor_v2', '_rebuild_tensor'): return _rebuild
        if mod == 'torch' and name in DT: return name
        if mod == 'collections' and name == 'OrderedDict': return collections.OrderedDict
        raise pickle.UnpicklingError(f'refusing {mod}.{name}')
    def persistent_load(s, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        _, stype, key, _loc, numel = pid[:5]
        s.st.setdefault(key, [DT[stype], numel, None])
        return key

def load(path):
    st = {}
    if zipfile.is_zipfile(path):
        z = zipfile.ZipFile(path); names = z.namelist(); root = names[0].split('/')[0]
        obj = _U(io.BytesIO(z.read(f'{root}/data.pkl')), st).load()
        for k, (dt, n, _) in st.items():
            st[k][2] = np.frombuffer(z.read(f'{root}/data/{k}'), dtype=dt, count=n)
    else:
        f = open(path, 'rb')
        assert pickle.load(f) == 0x1950a86a20f9469cfc6c, 'not a torch legacy file'
        pickle.load(f); pickle.load(f)            # protocol version, sys info
        obj = _U(f, st).load()
        for k in pickle.load(f):                 # storage keys, in file order
            dt, n, _ = st[k]
            (cnt,) = struct.unpack('<q', f.read(8))
            st[k][2] = np.frombuffer(f.read(cnt * np.dtype(dt).itemsize), dtype=dt)
    def mat(t):
        base = st[t.key][2]; it = base.itemsize
        return np.lib.stride_tricks.as_strided(base[t.off:], t.size, [s * it for s in t.stride]).copy()
    if isinstance(obj, dict) and 'state_dict' in obj: obj = obj['state_dict']
    return collections.OrderedDict((k, mat(v)) for k, v in obj.items() if isinstance(v, _Lazy))

def save_deterministic(tensors, path, metadata):
    """safetensors.numpy.save_file, but with `__metadata__` keys in the order of `metadata`."""
    buf = st_save(tensors, metadata=metadata)
    (n,) = struct.unpack('<Q', buf[:8])
    header = buf[8:8 + n]
    doc = json.loads(header, object_pairs_hook=collections.OrderedDict)
    assert set(doc['__metadata__']) == set(metadata)
    # the JSON round trip must be byte-exact before we touch anything
    assert json.dumps(doc, separators=(',', ':'), ensure_ascii=False).encode() == header.rstrip(b' ')
    doc['__metadata__'] = collections.OrderedDict((k, metadata[k]) for k in metadata)
    doc.move_to_end('__metadata__', last=False)   # safetensors writes it first
    new = json.dumps(doc, separators=(',', ':'), ensure_ascii=False).encode()
    trailing = len(header) - len(header.rstrip(b' '))   # safetensors pads the header with spaces to 8 bytes
    new += b' ' * trailing
    assert len(new) == n and sorted(new) == sorted(header), 'header rewrite changed more than key order'
    out = buf[:8] + new + buf[8 + n:]
    back = st_load(out)                                    # round-trip check
    assert sorted(back) == sorted(st_load(buf)) == sorted(tensors) and all(np.array_equal(back[k], tensors[k]) for k in tensors)
    with open(path, 'wb') as f:
        f.write(out)

if __name__ == '__main__':
    sd = load(sys.argv[1])
    # candle wants contiguous little-endian arrays; drop BN bookkeeping counters
    sd = {k: np.ascontiguousarray(v) for k, v in sd.items() if not k.endswith('num_batches_tracked')}
    save_deterministic(sd, sys.argv[2], metadata={'source': sys.argv[1].split('/')[-1], 'format': 'pt'})
    tot = 0
    for k, v in sd.items():
        print(f'{k:60s} {str(v.dtype):8s} {list(v.shape)}'); tot += v.nbytes
    print(f'# {len(sd)} tensors, {sum(v.size for v in sd.values())} params, {tot/1e6:.2f} MB')
