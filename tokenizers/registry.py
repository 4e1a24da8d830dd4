"""The registry of tokenization schemes: one line per scheme.

Kept free of heavy imports (no numpy, no symusic), so the command line can list the schemes
without loading any of them. A value is ``"module:Class"`` (imported when first asked for) or a
``Tokenizer`` subclass itself (a scheme registered at run time).
"""

from __future__ import annotations

SCHEMES: dict[str, object] = {
    "event": "cadenza.tokenizers.event:EventTokenizer",
    "remi": "cadenza.tokenizers.remi:REMITokenizer",
    "anticipatory": "cadenza.tokenizers.anticipatory:AnticipatoryTokenizer",
}
