"""Tokenizers: Event (Performance RNN), REMI (miditok) and Anticipatory, behind one face."""

from .base import SCHEMES, Tokenizer, get_tokenizer

__all__ = ["SCHEMES", "Tokenizer", "get_tokenizer"]
