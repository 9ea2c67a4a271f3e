"""The Magento 2 REST client: auth, store-scoped URLs, one method per Magento operation.

Every failure leaves as an exception from :mod:`refund_worker.errors`; retry decisions are made
once, in :mod:`refund_worker.magento.errors`. Knows nothing of the database or Celery.
"""

from refund_worker.magento.auth import BearerAuth, OAuth1Auth
from refund_worker.magento.client import CallRecord, MagentoClient
from refund_worker.magento.errors import ACL_RESOURCES

__all__ = ["ACL_RESOURCES", "BearerAuth", "CallRecord", "MagentoClient", "OAuth1Auth"]
