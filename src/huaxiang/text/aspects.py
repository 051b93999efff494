"""Aspects and entities in review text, Chinese and English: which aspects of a purchase a review
judges (quality, price, delivery, …) and with what polarity, and the brands, colours and product
types it names.

Method (lexicon + clause rules, no training data needed, fast enough for every review in a store):
a review is cut into clauses at punctuation and contrast words (但是, but, …); an aspect is found by
its terms (`ASPECTS`); its polarity is the sum, over the clause, of opinion words (`POSITIVE`,
`NEGATIVE`), each flipped by a negator just before it (不, 没有, not, n't, …) and "too X" (太小, too
small) counted as negative. A clause that names an aspect but holds no opinion word gets polarity
None: the caller falls back to the review's own polarity (sentiment model, rating or label).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

ASPECT_NAMES = ("quality", "price", "delivery", "service", "packaging", "appearance", "size", "taste", "scent",
                "performance", "content", "environment")

ASPECTS = {
    "quality": {
        "zh": "质量 品质 做工 材质 用料 质感 正品 假货 假的 山寨 次品 瑕疵 坏了 坏掉 耐用 结实 牢固 掉色 起球 开线 "
              "故障 毛病 返修 纸张 纸质 印刷 装订 做得 漏水 手感 缺页 盗版",
        "en": "quality|well made|poorly made|cheaply made|badly made|made well|made cheaply|cheaply|broke|broken|breaks|durable|sturdy|flimsy|fake|counterfeit|authentic|genuine|"
              "defective|material|fell apart|falls apart|knock off|knockoff"},
    "price": {
        "zh": "价格 价钱 价位 性价比 便宜 贵 实惠 划算 优惠 打折 降价 涨价 原价 省钱 不值 物有所值 超值 物超所值",
        "en": "price|priced|pricey|expensive|cheap|cheaper|value|worth|cost|costs|money|deal|bargain|overpriced|"
              "affordable|inexpensive"},
    "delivery": {
        "zh": "物流 快递 发货 送货 到货 配送 送达 运输 邮寄 运费 包邮 顺丰 快递员 送货员 到的 收到货",
        "en": "shipping|shipped|ship|delivery|delivered|arrived|arrive|arrival|came quickly|came fast|took weeks"},
    "service": {
        "zh": "服务 客服 态度 售后 前台 服务员 店家 卖家 商家 掌柜 退货 退款 换货 发票 安装 师傅 接待 工作人员 经理",
        "en": "seller|customer service|service|refund|returned|return it|exchange|vendor|replacement|support|"
              "responded|response"},
    "packaging": {
        "zh": "包装 盒子 外包装 封口 包得 纸箱 箱子 包装盒 塑封 封条",
        "en": "packaging|package|packaged|box|boxed|seal|sealed|wrapped|wrapping|bubble wrap"},
    "appearance": {
        "zh": "外观 外形 样子 颜色 款式 好看 漂亮 难看 设计 造型 屏幕 颜值 美观 时尚 色差 图片 样式 屏",
        "en": "look|looks|looked|color|colour|colors|pretty|beautiful|design|cute|ugly|gorgeous|shiny|style|shade"},
    "size": {
        "zh": "尺寸 大小 尺码 码数 合身 偏大 偏小 太大 太小 个头 分量 容量 长度 号码 大一号 小一号",
        "en": "size|sized|small|tiny|large|huge|fit|fits|amount|ounce|ounces|oz|travel size|bigger|smaller"},
    "taste": {
        "zh": "口感 好吃 难吃 新鲜 口味 香甜 多汁 奶味 喝起来 吃起来 水分 甜 酸 涩",
        "en": "taste|tastes|flavor|flavour|delicious"},
    "scent": {
        "zh": "香味 气味 异味 难闻 好闻 清香 刺鼻 香气 香精",
        "en": "smell|smells|smelled|smelling|scent|scented|fragrance|odor|odour|aroma|stinks|stink|stinky"},
    "performance": {
        "zh": "效果 性能 功能 好用 难用 电池 续航 系统 运行 反应 死机 散热 加热 待机 信号 音质 去屑 止痒 头屑 柔顺 "
              "顺滑 干涩 掉发 脱发 控油 滋润 保湿 配置 内存 硬盘 键盘 触摸 摄像头 拍照 像素 充电 发热 蓝屏 驱动 好使 "
              "速度 卡 用着 用起来 用了",
        "en": "works|worked|work|working|effective|results|result|moisturizing|moisturize|moisturizer|hydrating|"
              "lasts|lasting|long lasting|performance|effect|helped|helps|cleans|lather|lathers|dries|drying|"
              "irritation|irritated|breakout|broke out|burn|burns|burning|itch|itchy|residue|greasy|oily|absorbs|"
              "dandruff|did nothing|does nothing|stays|holds|hold"},
    "content": {
        "zh": "内容 情节 故事 作者 写得 文笔 翻译 译者 章节 观点 知识 思想 插图 文字 讲的 写的",
        "en": "story|stories|writing|written|author|plot|chapter"},
    "environment": {
        "zh": "环境 房间 卫生 干净 隔音 安静 位置 地段 交通 早餐 设施 装修 床 空调 浴室 卫生间 窗 停车 大堂 餐厅 周边 "
              "地理位置 房 脏",
        "en": "room|rooms|location|hotel|breakfast"},
}

# terms whose aspect depends on the review: 味道 is taste for food and drink, scent otherwise; noise,
# hot water and temperature are the room's when the review is about a hotel, else the product's
_CONTEXT_ZH = "味道 味儿 噪音 吵 热水 温度".split()
_FOOD_CUES = ("吃", "喝", "水果", "奶", "苹果", "橙", "香蕉", "梨", "芒果", "甜", "酸", "蒙牛", "伊利", "水果", "果汁", "好吃")
_HOTEL_CUES = ("酒店", "宾馆", "入住", "房间", "前台", "住")

POSITIVE_ZH = ("好 不错 满意 喜欢 棒 赞 优秀 完美 快 便宜 实惠 划算 值 漂亮 好看 清晰 流畅 舒服 舒适 干净 安静 方便 热情 "
               "周到 耐心 专业 及时 新鲜 好吃 香 甜 好闻 结实 精致 强 给力 合适 合身 正好 挺好 还行 可以 值得 推荐 超值 "
               "细腻 柔顺 顺滑 有效 明显 稳定 大方 精美 完好 好用 一流 优惠 准时 迅速 神速 宽敞 温馨 齐全 便利 清爽 丰富 "
               "实用 正品 耐用 牢固 舒心 惊喜 物超所值 物有所值 快捷 高效 省心 清香 好喝 可口 飞快 够快 很快").split()
NEGATIVE_ZH = ("差 不好 失望 垃圾 烂 慢 贵 难看 难吃 难闻 脏 吵 坏 坏了 破 破损 假 假货 次品 问题 毛病 故障 卡 死机 旧 陈旧 "
               "冷漠 恶劣 差劲 不满 后悔 麻烦 糟糕 粗糙 一般 不行 不值 不新鲜 异味 刺鼻 掉色 起球 色差 漏 差评 严重 痒 "
               "敷衍 不耐烦 欺骗 骗 延迟 不符 缺页 盗版 山寨 瑕疵 划痕 不舒服 难用 坑 霉 发霉 烂了 变质 过期 太差 "
               "无语 郁闷 气人 上当 退货 噪音 烫 发烫 不灵 失灵 掉发 脱发 头屑 干涩 漏水 生锈 腐烂 坑人 不专业").split()
NEGATORS_ZH = "不 没 没有 无 非 未 别 不太 不够 不是 不怎么 毫无 并不 一点也不 从不".split()
# "too X" with a neutral X is a complaint (太小, 偏大, 有点贵)
EXCESS_ZH = "太 偏 有点 有些 过于 略".split()
NEUTRAL_ADJ_ZH = set("大 小 长 短 薄 厚 硬 软 甜 咸 淡 重 轻 肥 瘦 紧 松 多 少 慢 吵 热 冷 高 低 浓 稀 酸 涩 暗 亮 旧".split())

POSITIVE_EN = set("""good great love loved loves lovely excellent amazing awesome nice perfect best wonderful fantastic
happy pleased recommend recommended favorite favourite like liked likes fast quick quickly cheap affordable reasonable
reasonably worth pretty beautiful soft smooth fresh gentle well works worked effective sturdy durable clean pleasant
fine decent impressed glad satisfied fits work working refreshing light subtle authentic genuine delicious promptly prompt
helpful helped helps moisturizing hydrating hydrated silky shiny gorgeous cute awesome better lasts lasting value
bargain inexpensive""".split())
NEGATIVE_EN = set("""bad poor terrible horrible awful worst disappointed disappointing disappointment hate hated
broke broken flimsy expensive overpriced pricey slow late damaged leaked leaking leaks waste useless fake defective
wrong returned refund irritated irritation irritating burn burned burning burns itchy itch rash breakout worse greasy
sticky drying harsh weak faint chemical stinks stink stinky smelly gross ugly tiny cheaply counterfeit knockoff
nasty awful junk garbage crap unhappy dissatisfied sucks problem problems issue issues dry broken rough oily
overpowering overwhelming strange weird off""".split())
NEGATORS_EN = {"not", "no", "never", "n't", "hardly", "barely", "without", "nothing", "didnt", "doesnt", "dont",
               "isnt", "wasnt", "cannot", "cant", "wont"}
EXCESS_EN = {"too", "overly"}
NEUTRAL_ADJ_EN = {"small", "big", "large", "strong", "thick", "thin", "heavy", "light", "sweet", "long", "short",
                  "expensive", "much", "little", "runny", "hard", "soft", "dark", "bright"}

BRANDS = ("蒙牛 伊利 特仑苏 联想 华为 小米 海尔 美的 万和 史密斯 戴尔 惠普 华硕 宏碁 三星 诺基亚 摩托罗拉 索尼 东芝 神舟 "
          "飘柔 海飞丝 清扬 潘婷 沙宣 霸王 京东 当当 卓越 亚马逊 淘宝 天猫 苹果电脑 iPhone iPad ThinkPad Lenovo Dell HP "
          "Olay Dove L'Oreal Loreal Neutrogena Nivea Gillette Schick Revlon Maybelline Aveeno Cetaphil Clinique "
          "Pantene Suave TRESemme Axe Old_Spice Amazon Philips Braun Remington Conair OPI Essie Sally_Hansen CeraVe "
          "Garnier Aussie Avon Estee_Lauder Lancome Chanel Dior Calvin_Klein Versace Bvlgari Davidoff Paco_Rabanne "
          "Herbal_Essences Head_&_Shoulders Burt's_Bees Yardley Crabtree Bath_&_Body_Works Lush Jergens Vaseline "
          "Clarisonic Proraso Barbasol Nexxus Redken Paul_Mitchell Aveda Shiseido Kiehl's Elizabeth_Arden")  # _ = space

_ZH_COLOURS = "红 橙 黄 绿 青 蓝 紫 黑 白 灰 粉 棕 金 银 褐 米 咖啡 粉红 玫红 宝蓝 藏青 酒红 土豪金 香槟 天蓝 深蓝 浅蓝 墨绿".split()
COLOURS_ZH = re.compile("(" + "|".join(sorted(_ZH_COLOURS, key=len, reverse=True)) + ")色")
COLOURS_EN = re.compile(r"\b(red|black|white|blue|green|yellow|purple|pink|gray|grey|gold|silver|brown|orange|beige|"
                        r"nude|coral|burgundy|violet|lavender|navy|teal|turquoise|ivory|bronze|copper|maroon|magenta|"
                        r"peach|plum|fuchsia|mauve|taupe|blonde|brunette)\b", re.I)

PRODUCTS_ZH = ("手机 电脑 笔记本 上网本 本本 平板 热水器 洗发水 洗发露 护发素 牛奶 酸奶 纯牛奶 衣服 裤子 裙子 外套 T恤 衬衫 "
               "毛衣 羽绒服 鞋 书 酒店 宾馆 苹果 橙子 香蕉 水果 芒果 猕猴桃 荔枝 键盘 鼠标 耳机 充电器 电池 车厘子 樱桃 "
               "草莓 葡萄 柚子 火龙果 奶 小说 教材 显示器 路由器 相机 电视").split()
PRODUCTS_EN = re.compile(r"\b(shampoo|conditioner|lotion|cream|moisturizer|soap|body wash|perfume|cologne|spray|"
                         r"nail polish|polish|razor|blades?|brush|mask|serum|oil|gel|cleanser|scrub|toner|deodorant|"
                         r"lipstick|lip balm|balm|mascara|foundation|powder|eyeliner|sunscreen|hair dryer|dryer|comb|"
                         r"shaving cream|aftershave|after shave|body spray|fragrance|eau de toilette|nail file|clippers?|"
                         r"soap bar|wash|hair spray|dye|hair color|wipes|sponge|tweezers|curler|flat iron)\b", re.I)

_CLAUSE_SPLIT = re.compile(r"[，。！？；;!?\n~～…]+|[,.](?!\d)|(?:但是|可是|不过|但|然而|就是|只是)|\b(?:but|however|though|although|except)\b",
                           re.I)
_CHEAP_QUALITY = re.compile(r"\b(feels?|felt|looks?|seems?|so|very|too) cheap\b|\bcheaply\b", re.I)
_EN_TOKEN = re.compile(r"n't|[a-z]+(?:'[a-z]+)?|\$\d+", re.I)


@dataclass
class AspectMention:
    aspect: str
    polarity: int | None  # +1, -1, or None when the clause holds no opinion
    term: str
    clause: str


@dataclass
class Extraction:
    aspects: list[AspectMention] = field(default_factory=list)
    brands: list[str] = field(default_factory=list)
    colours: list[str] = field(default_factory=list)
    products: list[str] = field(default_factory=list)


def is_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def _terms(lang: str) -> list[tuple[str, str]]:
    out = []
    for aspect, by_lang in ASPECTS.items():
        sep = " " if lang == "zh" else "|"
        out += [(t, aspect) for t in by_lang[lang].split(sep) if t]
    if lang == "zh":
        out += [(t, "?") for t in _CONTEXT_ZH]
    return sorted(out, key=lambda x: -len(x[0]))


_TERMS = {"zh": _terms("zh"), "en": _terms("en")}
_EN_TERM_RE = {a: re.compile(r"\b(" + ASPECTS[a]["en"] + r")\b", re.I) for a in ASPECTS}
_ZH_OPINION = sorted([(w, 1) for w in POSITIVE_ZH] + [(w, -1) for w in NEGATIVE_ZH] + [(w, 0) for w in NEGATORS_ZH],
                     key=lambda x: -len(x[0]))


def _zh_polarity(clause: str) -> int | None:
    """Sum of opinion words, longest match first; a negator flips the next opinion word."""
    score, seen, i, negate = 0, False, 0, False
    while i < len(clause):
        for excess in EXCESS_ZH:  # 太小, 偏大, 有点贵
            if clause.startswith(excess, i) and clause[i + len(excess):i + len(excess) + 1] in NEUTRAL_ADJ_ZH:
                score, seen, i, negate = score - 1, True, i + len(excess) + 1, False
                break
        else:
            match = next(((w, s) for w, s in _ZH_OPINION if clause.startswith(w, i)), None)
            if match is None:
                i += 1
                continue
            word, sign = match
            if sign == 0:
                negate = True
            else:
                score, seen, negate = score + (-sign if negate else sign), True, False
            i += len(word)
    return (1 if score > 0 else -1 if score < 0 else None) if seen else None


def _en_polarity(clause: str) -> int | None:
    tokens = [t.lower().replace("'", "") if t.lower() != "n't" else "n't" for t in _EN_TOKEN.findall(clause)]
    cheap_quality = bool(_CHEAP_QUALITY.search(clause))
    score, seen = 0, False
    for k, tok in enumerate(tokens):
        if tok in EXCESS_EN and k + 1 < len(tokens) and tokens[k + 1] in NEUTRAL_ADJ_EN:
            score, seen = score - 1, True
            continue
        sign = 1 if tok in POSITIVE_EN else -1 if tok in NEGATIVE_EN else 0
        if tok == "cheap" and cheap_quality:
            sign = -1
        if sign == 0 or (k and tokens[k - 1] in EXCESS_EN):
            continue
        if any(t in NEGATORS_EN for t in tokens[max(0, k - 3):k]):
            sign = -sign
        score, seen = score + sign, True
    return (1 if score > 0 else -1 if score < 0 else None) if seen else None


def _zh_aspects(clause: str, review: str) -> list[tuple[str, str]]:
    found, covered = [], [False] * len(clause)
    for term, aspect in _TERMS["zh"]:
        start = clause.find(term)
        while start >= 0:
            if not any(covered[start:start + len(term)]):
                covered[start:start + len(term)] = [True] * len(term)
                found.append((term, aspect))
            start = clause.find(term, start + 1)
    return [(t, _context_aspect(t, review) if a == "?" else a) for t, a in found]


def _context_aspect(term: str, review: str) -> str:
    if term.startswith("味"):
        return "taste" if any(c in review for c in _FOOD_CUES) else "scent"
    return "environment" if any(c in review for c in _HOTEL_CUES) else "performance"


def _en_aspects(clause: str) -> list[tuple[str, str]]:
    found = []
    for aspect, rx in _EN_TERM_RE.items():
        found += [(m.group(0).lower(), aspect) for m in rx.finditer(clause)]
    if _CHEAP_QUALITY.search(clause):  # cheap as a judgement of quality
        found = [(t, a) for t, a in found if t != "cheap"] + [("cheap", "quality")]
    return found


def _clauses(text: str) -> list[str]:
    return [c.strip() for c in _CLAUSE_SPLIT.split(text) if c and c.strip()]


def extract(text: str, brands: tuple[str, ...] | list[str] = (), category: str | None = None) -> Extraction:
    """Aspects (one per aspect: the clause polarities summed), brands (from `BRANDS` and `brands`),
    colours and product types named in `text`; `category` (the item's) helps tell taste from scent
    and a hotel room from an appliance."""
    text = text or ""
    context = f"{text} {category or ''}"
    zh = is_chinese(text)
    polarity = _zh_polarity if zh else _en_polarity
    by_aspect: dict[str, AspectMention] = {}
    for clause in _clauses(text):
        hits = _zh_aspects(clause, context) if zh else _en_aspects(clause)
        if not hits:
            continue
        p = polarity(clause)
        for term, aspect in hits:
            m = by_aspect.get(aspect)
            if m is None:
                by_aspect[aspect] = AspectMention(aspect, p, term, clause)
            elif p is not None:  # later clauses add to (and, when balanced, decide) the polarity
                total = (m.polarity or 0) + p
                m.polarity, m.clause = (p if total == 0 else (1 if total > 0 else -1)), clause
    out = Extraction(aspects=list(by_aspect.values()))
    low = text.lower()
    names = _brand_list(brands)
    out.brands = [b for b in names if (b in text if is_chinese(b) else re.search(r"\b" + re.escape(b.lower()) + r"\b", low))]
    out.colours = _unique(m.group(0) for m in (COLOURS_ZH if zh else COLOURS_EN).finditer(text))
    if zh:
        out.products = _unique(_longest_matches(text, PRODUCTS_ZH))
    else:
        out.products = _unique(m.group(0).lower() for m in PRODUCTS_EN.finditer(text))
    return out


def _brand_list(extra) -> list[str]:
    names = [b.replace("_", " ") for b in BRANDS.split()]
    return _unique([*names, *(b for b in extra if b and len(b) >= 2)])


def _longest_matches(text: str, words: list[str]) -> list[str]:
    out, i, ordered = [], 0, sorted(words, key=len, reverse=True)
    while i < len(text):
        w = next((w for w in ordered if text.startswith(w, i)), None)
        if w:
            out.append(w)
            i += len(w)
        else:
            i += 1
    return out


def _unique(items) -> list[str]:
    seen, out = set(), []
    for x in items:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


MENTIONS_DDL = """CREATE OR REPLACE TABLE {name} (review_id VARCHAR, kind VARCHAR, name VARCHAR,
                  polarity INTEGER, term VARCHAR)"""


def review_mentions(rows, brands: list[str] = ()) -> list[tuple]:
    """`(review_id, kind, name, polarity, term)` for each aspect (kind 'aspect', polarity ±1 or None),
    brand, colour and product named in each `(review_id, text, category)` of `rows`."""
    out = []
    for review_id, text, category in rows:
        e = extract(text, brands, category)
        out += [(review_id, "aspect", m.aspect, m.polarity, m.term) for m in e.aspects]
        out += [(review_id, kind, v, None, v) for kind, values in
                (("brand", e.brands), ("colour", e.colours), ("product", e.products)) for v in values]
    return out


def write_review_mentions(con, progress=None, batch: int = 20_000) -> int:
    """Replaces the table `review_mentions` with what every review's text names; returns its rows.
    Brands known to the catalogue (`items.brand`) are recognised besides the built-in list."""
    brands = [b for (b,) in con.execute("SELECT DISTINCT brand FROM items WHERE brand IS NOT NULL").fetchall()]
    total = con.execute("SELECT count(*) FROM reviews WHERE text IS NOT NULL").fetchone()[0]
    con.execute(MENTIONS_DDL.format(name="_new_review_mentions"))
    cur = con.cursor()
    cur.execute("SELECT review_id, text, category FROM reviews WHERE text IS NOT NULL ORDER BY review_id")
    done = 0
    while rows := cur.fetchmany(batch):
        found = review_mentions(rows, brands)
        if found:
            _insert(con, found)
        done += len(rows)
        if progress:
            progress(done, total)
    return con.execute("SELECT count(*) FROM _new_review_mentions").fetchone()[0]


def _insert(con, found: list[tuple]) -> None:
    import pandas as pd
    df = pd.DataFrame(found, columns=["review_id", "kind", "name", "polarity", "term"]).astype({"polarity": "Int32"})
    con.register("_mentions", df)
    con.execute("INSERT INTO _new_review_mentions SELECT * FROM _mentions")
    con.unregister("_mentions")
