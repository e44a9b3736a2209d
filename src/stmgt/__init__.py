"""stmgt: probabilistic spatio-temporal traffic forecasting on road networks.

The public API::

    from stmgt.data import Panel, synthetic_city
    from stmgt.distributions import GaussianMixture
    from stmgt.models import STMGT, build_model
    from stmgt.training import fit
"""

__version__ = "0.1.0"
