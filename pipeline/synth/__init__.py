"""Synthetic pretraining corpus in the real source formats: COCO 2017, Visual Genome and ALBEF/BLIP json lists.

`generate(SynthConfig(out=...))` writes a small corpus that the same readers serve as real data (DESIGN.md
section 2), so tests, the demo and benchmarks need no downloads:

    out/synth_config.json                 the resolved config (also marks the folder as ours to overwrite)
    out/sources.yaml                      every annotation file and image root, for `copa ingest`
    out/coco/annotations/{captions,instances}_train2017.json, out/coco/train2017/<12-digit id>.jpg
    out/vg/{image_data,objects,region_descriptions}.json, out/vg/VG_100K{,_2}/<id>.jpg
    out/web/{cc3m,sbu}_train.json, out/web/images/{cc3m,sbu}/<9-digit id>.jpg
    out/synth_truth.json                  which objects each COCO caption and VG region mentions
    out/faults.json, out/outside.jpg      only with faults=True (see pipeline.synth.faults)
    out/karpathy/dataset_synth.json, out/karpathy/images/<6-digit>.jpg, out/karpathy/sources_{train,val,test}.yaml
                                          only with karpathy_images: a downstream set in Karpathy's split format,
                                          pictures of its own, 3/5 train, 1/5 val, 1/5 test
    out/vqa/..., out/refexp/...           only with vqa_images / refexp_images: downstream VQA v2 and RefCOCO+
                                          (MDETR json) sets of pictures of their own (see pipeline.synth.tasks)

Pictures are glyphs of 12 COCO categories on varied backgrounds (pipeline.synth.draw) with exact boxes; texts
name some of the objects (pipeline.synth.text); pipeline.synth.formats writes the files, pipeline.synth.tasks the
VQA and refexp sets and pipeline.synth.faults the bad items; pipeline.synth.config holds the config and the plan
of counts and ids, pipeline.synth.corpus `generate`.

`num_images` counts image records over all parts: about 2.5% are COCO, 2.5% VG (at least 3 each; half of VG are
copies of COCO pictures with `coco_id` set, as in real VG), the rest web images without boxes. Each picture and
its texts come from generators seeded with (seed, picture index, stream), so the output is byte-identical for a
seed and does not depend on generation order.
"""

from pipeline.synth.config import CorpusPlan, SynthConfig
from pipeline.synth.corpus import PartReport, SynthReport, generate

__all__ = ["CorpusPlan", "PartReport", "SynthConfig", "SynthReport", "generate"]
