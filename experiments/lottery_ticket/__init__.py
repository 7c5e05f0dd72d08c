"""The Lottery Ticket Hypothesis (Frankle & Carbin, ICLR 2019): IMP with rewinding."""
