"""cadenza.tokenizers"""
