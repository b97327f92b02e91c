"""Chinese personal details for simulated patients and staff: names, Jilin addresses, ID numbers."""
from __future__ import annotations

import random
from datetime import date

SURNAMES = ("王李张刘陈杨赵黄周吴徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
            "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵"
            "万钱严武戴莫孔向汤")
GIVEN = ("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英文华建国玉兰志强红梅海燕俊峰淑珍"
         "宇浩然子涵欣怡雨轩梓萱思远佳琪博文晓东春雷冬梅立新凤英德明振华玉珍永刚")

# Jilin administrative divisions (GB/T 2260) used both as address and ID-number region.
REGIONS: tuple[tuple[str, str], ...] = (
    ("220102", "吉林省长春市南关区"), ("220103", "吉林省长春市宽城区"), ("220104", "吉林省长春市朝阳区"),
    ("220105", "吉林省长春市二道区"), ("220106", "吉林省长春市绿园区"), ("220122", "吉林省长春市农安县"),
    ("220182", "吉林省榆树市"), ("220183", "吉林省德惠市"), ("220202", "吉林省吉林市昌邑区"),
    ("220204", "吉林省吉林市船营区"), ("220302", "吉林省四平市铁西区"), ("220402", "吉林省辽源市龙山区"),
    ("220502", "吉林省通化市东昌区"), ("220602", "吉林省白山市浑江区"), ("220702", "吉林省松原市宁江区"),
    ("220802", "吉林省白城市洮北区"), ("222401", "吉林省延吉市"), ("222403", "吉林省敦化市"),
    ("222404", "吉林省珲春市"), ("220581", "吉林省梅河口市"),
)
STREETS = ("人民大街", "解放大路", "自由大路", "西安大路", "亚泰大街", "卫星路", "红旗街", "重庆路",
           "吉林大路", "东盛大街", "长江路", "延安大街", "北京大街", "光明路", "新民大街")

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


def id_check_digit(first17: str) -> str:
    """GB 11643-1999 check character of a resident ID number (ISO 7064 MOD 11-2)."""
    total = sum(int(c) * w for c, w in zip(first17, _WEIGHTS))
    return _CHECK[total % 11]


def is_valid_id(number: str) -> bool:
    """True when an 18-character resident ID number carries the right check character."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    return id_check_digit(number[:17]) == number[17].upper()


def resident_id(rng: random.Random, region: str, birth: date, sex: str) -> str:
    """A resident ID number: region, birth date, sequence (odd for men, even for women), check."""
    seq = rng.randrange(0, 500) * 2 + (1 if sex == "M" else 0)
    body = f"{region}{birth:%Y%m%d}{seq:03d}"
    return body + id_check_digit(body)


def name(rng: random.Random) -> str:
    given = GIVEN[rng.randrange(len(GIVEN))]
    if rng.random() < 0.6:
        given += GIVEN[rng.randrange(len(GIVEN))]
    return SURNAMES[rng.randrange(len(SURNAMES))] + given


def address(rng: random.Random, region_name: str) -> str:
    return (f"{region_name}{STREETS[rng.randrange(len(STREETS))]}{rng.randint(1, 3999)}号"
            f"{rng.randint(1, 30)}栋{rng.randint(1, 6)}单元{rng.randint(1, 28)}{rng.randint(1, 4):02d}室")


def mobile(rng: random.Random) -> str:
    return rng.choice(("139", "138", "135", "150", "186", "187", "131", "177")) + f"{rng.randrange(10**8):08d}"
