"""More wrong answers for notebook 05 that its graded cells must reject (not named by hints)."""

from course_lib.checks import Mistake
from course_lib.exercises.multihead_attention import _Attention, _load


def _split_every_head_everything(x, n_heads):
    return x.unsqueeze(1).expand(-1, n_heads, -1, -1)


def _split_hard_coded_four_heads(x, n_heads):
    batch, seq, d_model = x.shape
    return x.view(batch, seq, 4, d_model // 4).transpose(1, 2)


def _merge_first_head_only(x):
    return x[:, 0]


def _merge_heads_on_positions(x):
    batch, n_heads, seq, d_head = x.shape
    return x.reshape(batch, n_heads * seq, d_head)


class _ValuesFromKeys(_Attention):
    def forward(self, query, key=None, value=None, mask=None):
        key = query if key is None else key
        return super().forward(query, key, key, mask)


class _IgnoresKeyArgument(_Attention):
    def forward(self, query, key=None, value=None, mask=None):
        return super().forward(query, None, None, mask)


def _load_key_query_swapped(module, torch_mha):
    _load(module, torch_mha, order=(1, 0, 2))


def _load_nothing(module, torch_mha):
    return None


def _repeat_ignored(x, n_rep):
    return x


EXTRA_MISTAKES = {
    "split_heads": [
        Mistake("every head sees all channels", "", _split_every_head_everything),
        Mistake("hard-coded to four heads", "", _split_hard_coded_four_heads),
    ],
    "merge_heads": [
        Mistake("only the first head kept", "", _merge_first_head_only),
        Mistake("heads stacked along the positions", "", _merge_heads_on_positions),
    ],
    "multihead_attention": [
        Mistake("the keys used as values", "", _ValuesFromKeys),
        Mistake("always self-attention", "", _IgnoresKeyArgument),
    ],
    "load_from_torch": [
        Mistake("query and key blocks swapped", "", _load_key_query_swapped),
        Mistake("nothing copied", "", _load_nothing),
    ],
    "repeat_kv_heads": [Mistake("n_rep ignored", "", _repeat_ignored)],
}
