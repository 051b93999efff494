"""Tokenising item titles into keywords: jieba for Chinese, a word tokenizer for English."""
from __future__ import annotations

import logging
import re
from functools import lru_cache

_CJK = re.compile(r"[\u4e00-\u9fff]")
_WORD = re.compile(r"[a-z][a-z0-9'\-]{1,}|[0-9]+[a-z]+", re.I)

EN_STOP = frozenset("""
a an and are as at be by for from has have in is it its of on or set pack pcs piece pieces the to with
x oz ml fl fluid ounce ounces inch inches size new free large small medium mini lot box count
""".split())
ZH_STOP = frozenset("的 了 和 是 在 与 及 或 等 个 一 不 也 有 就 都 而 这 那 你 我 他 她 它 很 还 又 被 把 让 给 从 对 为 以 之 其 中 上 下 包邮 正品 新款".split())


@lru_cache(maxsize=1)
def _jieba():
    import jieba
    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def tokens(title: str | None) -> list[str]:
    """Distinct keywords of one title, lower-cased, stop words and 1-character tokens removed."""
    if not title:
        return []
    out: list[str] = []
    if _CJK.search(title):
        for tok in _jieba().lcut(title):
            tok = tok.strip().lower()
            if len(tok) >= 2 and not tok.isdigit() and tok not in ZH_STOP and tok not in EN_STOP:
                out.append(tok)
    else:
        out = [w.lower().strip("'-") for w in _WORD.findall(title)]
        out = [w for w in out if len(w) >= 2 and w not in EN_STOP]
    return list(dict.fromkeys(out))
