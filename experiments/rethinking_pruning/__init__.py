"""Rethinking the value of network pruning (Liu et al., ICLR 2019): fine-tune vs scratch, ticket vs random init."""
