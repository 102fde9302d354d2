"""ADE20K's 150 classes and our mapping to the paper's super-classes (paper §3.1).

AdaCode trains one codebook per semantic super-class: Architectures, Indoor objects, Natural
scenes, Street views (from DIV2K/Flickr2K/DIV8K patches labelled by an ADE20K segmenter) and
Portraits (from a face set, FFHQ). The official repository ships neither the mapping nor the
labelling script (docs/official.md#semantic-classes), so this table is ours. The rule we
followed: a class goes where a 512x512 patch dominated by it would most often be photographed, judged by the texture a
codebook has to reproduce (straight-edged built structure, interior furnishings and
materials, organic natural texture, or the paved, signed, vehicle-filled street scene).
Classes whose place is not obvious carry the reason in the table.

The ids are the SceneParsing / ADEChallenge 2016 order used by every ADE20K-150 segmenter
(HuggingFace ``id2label`` of the SegFormer ADE checkpoints): 0 = wall ... 149 = flag.
"""
from __future__ import annotations

import numpy as np

ARCHITECTURE = "architecture"
INDOOR = "indoor"
NATURAL = "natural"
STREET = "street"
PORTRAIT = "portrait"  # from a face set, never from ADE20K labels
SUPER_CLASSES = (ARCHITECTURE, INDOOR, NATURAL, STREET)

A, I, N, S = ARCHITECTURE, INDOOR, NATURAL, STREET

# (id, ADE20K name, super-class, reason when not obvious)
ADE20K_TABLE: tuple[tuple[int, str, str, str], ...] = (
    (0, "wall", I,
     "ADE20K labels interior walls 'wall'; exterior walls are part of 'building'/'house'"),
    (1, "building", A, ""),
    (2, "sky", N,
     "sky-dominated patches are landscapes; clouds and smooth gradients are natural texture"),
    (3, "floor", I, ""),
    (4, "tree", N, ""),
    (5, "ceiling", I, ""),
    (6, "road", S, ""),
    (7, "bed", I, ""),
    (8, "windowpane", A,
     "window-dominated patches are facade grids or glass fronts: regular straight-edged structure"),
    (9, "grass", N, ""),
    (10, "cabinet", I, ""),
    (11, "sidewalk", S, ""),
    (12, "person", S,
     "ADE20K people are mostly full-body pedestrians in street scenes; faces are the portrait set's"),
    (13, "earth", N, ""),
    (14, "door", I,
     "most ADE20K doors are interior doors; panels, frames and handles read like furniture"),
    (15, "table", I, ""),
    (16, "mountain", N, ""),
    (17, "plant", N, "potted plants occur indoors, but the patch texture is foliage"),
    (18, "curtain", I, ""),
    (19, "chair", I, ""),
    (20, "car", S, ""),
    (21, "water", N, ""),
    (22, "painting", I, "hangs on interior walls; framed flat art is an indoor object"),
    (23, "sofa", I, ""),
    (24, "shelf", I, ""),
    (25, "house", A, ""),
    (26, "sea", N, ""),
    (27, "mirror", I, ""),
    (28, "rug", I, ""),
    (29, "field", N, ""),
    (30, "armchair", I, ""),
    (31, "seat", I, "theatre, vehicle-interior and waiting-room seats: upholstered interiors"),
    (32, "fence", S,
     "fences line streets, yards and car parks: thin repeated man-made structure"),
    (33, "desk", I, ""),
    (34, "rock", N, ""),
    (35, "wardrobe", I, ""),
    (36, "lamp", I, ""),
    (37, "bathtub", I, ""),
    (38, "railing", A,
     "balcony, terrace and bridge railings are built structure (indoor ones: 'bannister')"),
    (39, "cushion", I, ""),
    (40, "base", I, "pedestals and stands of furniture, lamps and exhibits, mostly indoors"),
    (41, "box", I, ""),
    (42, "column", A, ""),
    (43, "signboard", S, ""),
    (44, "chest of drawers", I, ""),
    (45, "counter", I, ""),
    (46, "sand", N, ""),
    (47, "sink", I, ""),
    (48, "skyscraper", A, ""),
    (49, "fireplace", I, ""),
    (50, "refrigerator", I, ""),
    (51, "grandstand", A, "stadium stands are large built structures with repeated rows"),
    (52, "path", N,
     "ADE20K 'path' is an unpaved trail in parks and gardens (paved ones are 'sidewalk')"),
    (53, "stairs", A, "outdoor steps and stairs are built stonework"),
    (54, "runway", S, "airport tarmac: a paved surface with painted markings, like a road"),
    (55, "case", I, "display cases and showcases in shops and museums"),
    (56, "pool table", I, ""),
    (57, "pillow", I, ""),
    (58, "screen door", I, ""),
    (59, "stairway", A, "staircases are built structure, grouped with 'stairs'"),
    (60, "river", N, ""),
    (61, "bridge", A, ""),
    (62, "bookcase", I, ""),
    (63, "blind", I, ""),
    (64, "coffee table", I, ""),
    (65, "toilet", I, ""),
    (66, "flower", N, ""),
    (67, "book", I, ""),
    (68, "hill", N, ""),
    (69, "bench", S,
     "benches are street and park furniture, mostly photographed outdoors among pavements"),
    (70, "countertop", I, ""),
    (71, "stove", I, ""),
    (72, "palm", N, ""),
    (73, "kitchen island", I, ""),
    (74, "computer", I, ""),
    (75, "swivel chair", I, ""),
    (76, "boat", N,
     "boats are photographed on water; sea, lake or river fills the rest of the patch"),
    (77, "bar", I, ""),
    (78, "arcade machine", I, ""),
    (79, "hovel", A, "huts and shacks are buildings"),
    (80, "bus", S, ""),
    (81, "towel", I, ""),
    (82, "light", I, ""),
    (83, "truck", S, ""),
    (84, "tower", A, ""),
    (85, "chandelier", I, ""),
    (86, "awning", S, "shop awnings hang over sidewalks: storefront street scenes"),
    (87, "streetlight", S, ""),
    (88, "booth", S, "kiosks, phone booths and market stalls stand in streets"),
    (89, "television receiver", I, ""),
    (90, "airplane", S, "grouped with the other vehicles and the runway they stand on"),
    (91, "dirt track", N, "unpaved tracks through open terrain"),
    (92, "apparel", I, "clothes on racks and in shop displays"),
    (93, "pole", S, ""),
    (94, "land", N, ""),
    (95, "bannister", I, "the handrail of interior stairs (exterior ones are 'railing')"),
    (96, "escalator", I, "in malls and stations, indoors"),
    (97, "ottoman", I, ""),
    (98, "bottle", I, ""),
    (99, "buffet", I, ""),
    (100, "poster", S,
     "posters and bills are mostly pasted on street walls; printed text like signboards"),
    (101, "stage", I, ""),
    (102, "van", S, ""),
    (103, "ship", N, "as 'boat': the surrounding water dominates"),
    (104, "fountain", A, "built stonework in squares and gardens"),
    (105, "conveyer belt", I, ""),
    (106, "canopy", A, "roof structures over entrances and terraces"),
    (107, "washer", I, ""),
    (108, "plaything", I, ""),
    (109, "swimming pool", A, "a built basin with tiles and straight edges"),
    (110, "stool", I, ""),
    (111, "barrel", I, ""),
    (112, "basket", I, ""),
    (113, "waterfall", N, ""),
    (114, "tent", N, "camping tents are pitched in natural surroundings"),
    (115, "bag", I, ""),
    (116, "minibike", S, ""),
    (117, "cradle", I, ""),
    (118, "oven", I, ""),
    (119, "ball", I, ""),
    (120, "food", I, ""),
    (121, "step", A, "single steps at entrances, grouped with 'stairs'"),
    (122, "tank", S,
     "storage and military tanks: large outdoor man-made objects in industrial and street scenes"),
    (123, "trade name", S, "brand names on shopfronts, like signboards"),
    (124, "microwave", I, ""),
    (125, "pot", I, ""),
    (126, "animal", N, ""),
    (127, "bicycle", S, ""),
    (128, "lake", N, ""),
    (129, "dishwasher", I, ""),
    (130, "screen", I, "projection screens"),
    (131, "blanket", I, ""),
    (132, "sculpture", A,
     "statues and monuments stand in squares and on facades; carved stone like architecture"),
    (133, "hood", I, "kitchen extractor hoods"),
    (134, "sconce", I, ""),
    (135, "vase", I, ""),
    (136, "traffic light", S, ""),
    (137, "tray", I, ""),
    (138, "ashcan", S, "trash bins mostly stand on sidewalks"),
    (139, "fan", I, ""),
    (140, "pier", A, "a built deck structure, grouped with 'bridge'"),
    (141, "crt screen", I, ""),
    (142, "plate", I, ""),
    (143, "monitor", I, ""),
    (144, "bulletin board", I, ""),
    (145, "shower", I, ""),
    (146, "radiator", I, ""),
    (147, "glass", I, "drinking glasses"),
    (148, "clock", I, ""),
    (149, "flag", S, "flags fly over streets and squares"),
)

NUM_CLASSES = 150
CLASS_NAMES = tuple(row[1] for row in ADE20K_TABLE)
SUPER_CLASS_OF = tuple(row[2] for row in ADE20K_TABLE)

assert len(ADE20K_TABLE) == NUM_CLASSES and all(r[0] == i for i, r in enumerate(ADE20K_TABLE))


def dominant_class(labels: np.ndarray) -> int | None:
    """The ADE20K id (0..149) covering the most pixels of a label map; None if none is valid.

    Values outside 0..149 (e.g. 255 'unlabelled', or -1) are ignored. Ties go to the lower id.
    """
    flat = np.asarray(labels).ravel()
    flat = flat[(flat >= 0) & (flat < NUM_CLASSES)].astype(np.int64)
    if flat.size == 0:
        return None
    return int(np.bincount(flat, minlength=NUM_CLASSES).argmax())


def super_class(class_id: int) -> str:
    """The super-class of an ADE20K id."""
    return SUPER_CLASS_OF[class_id]
