"""cobranca: collection letters (cartas de cobrança) from TOTVS Protheus, sent by a daemon."""

__version__ = "0.1.0"
