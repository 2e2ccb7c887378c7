"""Families of posts that must share a split, so that test F1 is not measured on pictures the
model trained on in another guise: Danbooru's parent/child chains (variants, recolours,
edits: `parent_id`), identical files (the same md5) and near-duplicates (re-uploads,
recolours, small edits: a perceptual hash of the decoded image within a Hamming distance).

The perceptual hash is imagehash's pHash at 16 x 16 (256 bits) of the square the subset
stores. On the built-in sample's flat synthetic drawings, unrelated pictures lie 58 bits or
more apart while re-uploads lie within 2 and recolours within 18 (crops are far: the
metadata links those); 24 bits is the default limit.
"""

from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image

HASH_SIZE = 16
MAX_DISTANCE = 24
# the most images near-duplicate links may gather into one family: a larger cluster is not
# one picture re-uploaded but a look many share (flat colours, blank pages, placeholders),
# and joined it would swallow the split
MAX_NEAR_FAMILY = 16


def phash(im: Image.Image) -> str:
    """The image's perceptual hash as hex (256 bits)."""
    return str(imagehash.phash(im, hash_size=HASH_SIZE))


class _Union:
    def __init__(self, n: int):
        self.parent = np.arange(n)
        self.size = np.ones(n, np.int64)

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return int(root)

    def join(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[max(ra, rb)] = min(ra, rb)
        self.size[min(ra, rb)] += self.size[max(ra, rb)]
        return True


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between every row of `a` and of `b` (hashes as uint64 words)."""
    x = a[:, None, :] ^ b[None, :, :]
    if hasattr(np, "bitwise_count"):  # numpy 2
        return np.bitwise_count(x).sum(2, dtype=np.int32)
    return _POPCOUNT[x.view(np.uint8)].sum(2, dtype=np.int32)


def near_pairs(hashes: list[str], max_distance: int = MAX_DISTANCE, block: int = 128) -> list[tuple[int, int]]:
    """Index pairs (i < j) of hashes within `max_distance` bits: every pair compared, a block
    of rows at a time against those after it (25,000 images: 312M pairs, seconds, about 100 MB)."""
    ok = [i for i, h in enumerate(hashes) if h]
    if len(ok) < 2:
        return []
    words = np.array([np.frombuffer(bytes.fromhex(hashes[i]), ">u8") for i in ok]).astype(np.uint64)
    out = []
    for start in range(0, len(ok), block):
        d = _distances(words[start: start + block], words[start:])
        for i, j in zip(*np.nonzero(d <= max_distance)):
            if j > i:  # the block's own pairs once, and each image against those after it
                out.append((ok[start + i], ok[start + j]))
    return out


def find_families(ids: np.ndarray, md5s: list[str], parent_ids: np.ndarray, hashes: list[str],
                  max_distance: int = MAX_DISTANCE) -> tuple[np.ndarray, dict[str, int], np.ndarray]:
    """Each image's family (the smallest row index in it) and how many links of each kind
    joined two families: `parent_child` (a post and its parent, or two children of one
    parent, even when the parent itself is not kept), `md5` (the same file) and `phash`
    (near-duplicates, `max_distance` bits or fewer; a negative distance turns them off). A
    near-duplicate link that would make a family of more than MAX_NEAR_FAMILY images is
    refused and counted (`phash_refused`); the refused links are returned too, as row pairs
    (k x 2), so that a split can be audited for the near-duplicates they leave apart."""
    n = len(ids)
    u = _Union(n)
    links = {"parent_child": 0, "md5": 0, "phash": 0, "phash_refused": 0}
    row_of = {int(i): r for r, i in enumerate(ids)}
    first_child: dict[int, int] = {}
    for r, p in enumerate(parent_ids):
        p = int(p)
        if p <= 0:
            continue
        if p in row_of:
            links["parent_child"] += u.join(r, row_of[p])
        if p in first_child:  # siblings: variants of one original, kept or not
            links["parent_child"] += u.join(r, first_child[p])
        first_child.setdefault(p, r)
    seen: dict[str, int] = {}
    for r, m in enumerate(md5s):
        if m:
            if m in seen:
                links["md5"] += u.join(r, seen[m])
            seen.setdefault(m, r)
    refused = []
    if max_distance >= 0:
        for a, b in near_pairs(hashes, max_distance):
            ra, rb = u.find(a), u.find(b)
            if ra != rb and u.size[ra] + u.size[rb] > MAX_NEAR_FAMILY:
                links["phash_refused"] += 1
                refused.append((a, b))
            else:
                links["phash"] += u.join(a, b)
    family = np.array([u.find(r) for r in range(n)])
    # a refused link whose ends a later link joined anyway leaves nothing apart
    pairs = np.array([(a, b) for a, b in refused if family[a] != family[b]], np.int64).reshape(-1, 2)
    return family, links, pairs


def family_labels(Y: np.ndarray, family: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each family's labels, the union of its members'; each image's row in them)."""
    roots, inverse = np.unique(family, return_inverse=True)
    F = np.zeros((len(roots), Y.shape[1]), Y.dtype)
    np.maximum.at(F, inverse, Y)
    return F, inverse


def near_train(split: np.ndarray, pairs: np.ndarray, where: str = "test") -> int:
    """How many images of `where` are near-duplicates of a training image by a link the
    family cap refused (`pairs` from `find_families`): the leak the families leave open."""
    s = np.asarray(split)
    a, b = np.asarray(pairs, np.int64).reshape(-1, 2).T
    hit = set(a[(s[a] == where) & (s[b] == "train")].tolist()) | set(b[(s[b] == where) & (s[a] == "train")].tolist())
    return len(hit)


def leaked(split: np.ndarray, family: np.ndarray, where: str = "test") -> int:
    """How many images of `where` have a family member in the training split."""
    trained = set(family[split == "train"].tolist())
    return int(sum(f in trained for f in family[split == where].tolist()))
