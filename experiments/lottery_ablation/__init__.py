"""Deconstructing Lottery Tickets (Zhou, Lan, Liu & Yosinski, NeurIPS 2019): zeros, signs, supermasks."""
