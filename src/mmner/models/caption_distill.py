"""caption-distill, mmner's own system: bert-crf-caption's network trained towards a teacher.

The network is BERT-CRF with captions (`[CLS] text [SEP] caption [SEP]`, CRF over the text; Chen et al.'s
caption-as-image), in the system's configs with word shapes (`model.casing`). What makes the system is how it
is trained (docs/results/best.md):

1. finished runs are the teacher (in the system's configs, one MPNet-base bert-crf-caption run with word shapes;
   in the earlier recipe, an ensemble of the dataset's MiniLM-L6 systems); `mmner teacher` writes the mean of
   their CRF marginals for every training post (`mmner.train.teacher`, `mmner.train.distill`). In the system's
   configs the dataset's own posts are cross-fitted: two more runs of the teacher, each trained without one half
   of them (`data.holdout`), give the marginals of the half they never saw (`mmner teacher --fold k/2`), since
   the full teacher's marginals of the posts it was trained on are almost one-hot;
2. the other Twitter dataset's training posts join the training data, tagged by the same teacher
   (`data.extra_train`; `mmner teacher --tags`): in-domain posts without their gold tags;
3. every post with a target trains on (1 - w) x its CRF loss + w x KL(teacher marginals || model marginals)
   (`distill.weight`, 0.5): the soft targets say how sure the teacher is, word by word.

One model of the encoder's size is left, so tagging costs what bert-crf-caption costs. Training refuses
to start without `distill.targets`; tagging needs nothing beyond the run directory.
"""

from __future__ import annotations

from mmner.models.bert_crf_caption import BertCRFCaption
from mmner.models.registry import register


@register("caption-distill")
class CaptionDistill(BertCRFCaption):
    teacher_required = True
