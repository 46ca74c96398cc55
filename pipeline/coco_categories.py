"""The 80 object categories of COCO 2017 detection, with their official ids.

These are facts copied from the `categories` list of `instances_train2017.json`. The ids are *not* contiguous
(1..90 with ten gaps: 12, 26, 29, 30, 45, 66, 68, 69, 71, 83), so code must look categories up by id and never
index a list with an id. Synonyms for caption matching live elsewhere; this module holds only the official table.
"""

from __future__ import annotations

from typing import NamedTuple


class CocoCategory(NamedTuple):
    """One COCO category as the official annotation files list it."""

    id: int  # official, non-contiguous category id
    name: str  # official name, lower case, may contain a space ("stop sign")
    supercategory: str  # official supercategory ("vehicle", "animal", ...)


COCO_CATEGORIES: tuple[CocoCategory, ...] = (
    CocoCategory(1, "person", "person"),
    CocoCategory(2, "bicycle", "vehicle"),
    CocoCategory(3, "car", "vehicle"),
    CocoCategory(4, "motorcycle", "vehicle"),
    CocoCategory(5, "airplane", "vehicle"),
    CocoCategory(6, "bus", "vehicle"),
    CocoCategory(7, "train", "vehicle"),
    CocoCategory(8, "truck", "vehicle"),
    CocoCategory(9, "boat", "vehicle"),
    CocoCategory(10, "traffic light", "outdoor"),
    CocoCategory(11, "fire hydrant", "outdoor"),
    CocoCategory(13, "stop sign", "outdoor"),
    CocoCategory(14, "parking meter", "outdoor"),
    CocoCategory(15, "bench", "outdoor"),
    CocoCategory(16, "bird", "animal"),
    CocoCategory(17, "cat", "animal"),
    CocoCategory(18, "dog", "animal"),
    CocoCategory(19, "horse", "animal"),
    CocoCategory(20, "sheep", "animal"),
    CocoCategory(21, "cow", "animal"),
    CocoCategory(22, "elephant", "animal"),
    CocoCategory(23, "bear", "animal"),
    CocoCategory(24, "zebra", "animal"),
    CocoCategory(25, "giraffe", "animal"),
    CocoCategory(27, "backpack", "accessory"),
    CocoCategory(28, "umbrella", "accessory"),
    CocoCategory(31, "handbag", "accessory"),
    CocoCategory(32, "tie", "accessory"),
    CocoCategory(33, "suitcase", "accessory"),
    CocoCategory(34, "frisbee", "sports"),
    CocoCategory(35, "skis", "sports"),
    CocoCategory(36, "snowboard", "sports"),
    CocoCategory(37, "sports ball", "sports"),
    CocoCategory(38, "kite", "sports"),
    CocoCategory(39, "baseball bat", "sports"),
    CocoCategory(40, "baseball glove", "sports"),
    CocoCategory(41, "skateboard", "sports"),
    CocoCategory(42, "surfboard", "sports"),
    CocoCategory(43, "tennis racket", "sports"),
    CocoCategory(44, "bottle", "kitchen"),
    CocoCategory(46, "wine glass", "kitchen"),
    CocoCategory(47, "cup", "kitchen"),
    CocoCategory(48, "fork", "kitchen"),
    CocoCategory(49, "knife", "kitchen"),
    CocoCategory(50, "spoon", "kitchen"),
    CocoCategory(51, "bowl", "kitchen"),
    CocoCategory(52, "banana", "food"),
    CocoCategory(53, "apple", "food"),
    CocoCategory(54, "sandwich", "food"),
    CocoCategory(55, "orange", "food"),
    CocoCategory(56, "broccoli", "food"),
    CocoCategory(57, "carrot", "food"),
    CocoCategory(58, "hot dog", "food"),
    CocoCategory(59, "pizza", "food"),
    CocoCategory(60, "donut", "food"),
    CocoCategory(61, "cake", "food"),
    CocoCategory(62, "chair", "furniture"),
    CocoCategory(63, "couch", "furniture"),
    CocoCategory(64, "potted plant", "furniture"),
    CocoCategory(65, "bed", "furniture"),
    CocoCategory(67, "dining table", "furniture"),
    CocoCategory(70, "toilet", "furniture"),
    CocoCategory(72, "tv", "electronic"),
    CocoCategory(73, "laptop", "electronic"),
    CocoCategory(74, "mouse", "electronic"),
    CocoCategory(75, "remote", "electronic"),
    CocoCategory(76, "keyboard", "electronic"),
    CocoCategory(77, "cell phone", "electronic"),
    CocoCategory(78, "microwave", "appliance"),
    CocoCategory(79, "oven", "appliance"),
    CocoCategory(80, "toaster", "appliance"),
    CocoCategory(81, "sink", "appliance"),
    CocoCategory(82, "refrigerator", "appliance"),
    CocoCategory(84, "book", "indoor"),
    CocoCategory(85, "clock", "indoor"),
    CocoCategory(86, "vase", "indoor"),
    CocoCategory(87, "scissors", "indoor"),
    CocoCategory(88, "teddy bear", "indoor"),
    CocoCategory(89, "hair drier", "indoor"),
    CocoCategory(90, "toothbrush", "indoor"),
)

CATEGORY_BY_ID: dict[int, CocoCategory] = {c.id: c for c in COCO_CATEGORIES}
CATEGORY_BY_NAME: dict[str, CocoCategory] = {c.name: c for c in COCO_CATEGORIES}

assert len(COCO_CATEGORIES) == 80 and len(CATEGORY_BY_ID) == 80 and len(CATEGORY_BY_NAME) == 80
