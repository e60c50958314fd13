"""customer_intel: the shared library behind the customer-analytics notebooks."""
