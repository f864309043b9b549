"""A seller's workflow through the client openapi-python-client generated from the served
document, called only as its types say.

Every step must answer the generated model (not None, not a Problem), with every field the
server sent parsed (no Unset, nothing left over in `additional_properties`). Each step's
request body and response JSON are written to the capture file for the TypeScript check.

Usage: workflow.py BASE_URL TENANT_ID TOKEN CAPTURE_JSON
"""

import json
import sys
import uuid

from convcommerce_client import AuthenticatedClient
from convcommerce_client.api.conversations import list_threads, post_message
from convcommerce_client.api.limits import tenant_quotas, tenant_usage
from convcommerce_client.api.orders import create_order, list_orders, transition_order
from convcommerce_client.api.products import (
    create_product,
    get_product,
    list_products,
    update_product,
)
from convcommerce_client.api.tenant import current_tenant
from convcommerce_client.models import (
    Channel,
    CreateOrder,
    CreateProduct,
    CustomerInput,
    ItemInput,
    Message,
    Order,
    OrderStatus,
    PageOrder,
    PageProduct,
    PageThread,
    PostMessage,
    Product,
    ProductStatus,
    Quotas,
    SenderType,
    Tenant,
    Thread,
    Transition,
    UpdateProduct,
    Usage,
)
from convcommerce_client.types import Unset


def leftovers(model, raw, where):
    """What of `raw` (the JSON the server sent) did not land in a field of `model`."""
    problems = []
    if isinstance(raw, dict):
        extra = getattr(model, "additional_properties", None)
        if extra:
            problems.append(f"{where}: undocumented {sorted(extra)}")
        for key, value in raw.items():
            attr = model.get(key) if isinstance(model, dict) else getattr(model, key, Unset())
            if isinstance(attr, Unset):
                problems.append(f"{where}.{key}: sent but Unset")
            else:
                problems += leftovers(attr, value, f"{where}.{key}")
    elif isinstance(raw, list):
        if not isinstance(model, list) or len(model) != len(raw):
            problems.append(f"{where}: not the list sent")
        else:
            for i, (item, value) in enumerate(zip(model, raw)):
                problems += leftovers(item, value, f"{where}[{i}]")
    elif raw is not None and model is None:
        problems.append(f"{where}: sent but None")
    return problems


class Workflow:
    def __init__(self, base_url, tenant, token):
        self.client = AuthenticatedClient(base_url=base_url, token=token)
        self.tenant = tenant
        self.steps = []

    def step(self, name, method, path, status, call, expected, body=None):
        """Runs one call; returns its parsed model (or None when the step failed)."""
        record = {"step": name, "method": method, "path": path, "status": status,
                  "request": body.to_dict() if body is not None else None}
        try:
            response = call()
            record["response"] = json.loads(response.content)
            parsed = response.parsed
            problems = []
            if response.status_code != status:
                problems.append(f"status {response.status_code}, not {status}: {response.content[:300]!r}")
            if not isinstance(parsed, expected):
                problems.append(f"parsed as {type(parsed).__name__}, not {expected.__name__}")
            else:
                problems += leftovers(parsed, record["response"], expected.__name__)
        except Exception as error:  # a parse error is a failed step, with its reason
            parsed, problems = None, [f"{type(error).__name__}: {error}"]
        record["ok"] = not problems
        record["problems"] = problems
        self.steps.append(record)
        return parsed if not problems else None

    def run(self):
        c, t = self.client, self.tenant
        self.step("get the tenant", "get", "/api/v1/tenant", 200,
                  lambda: current_tenant.sync_detailed(client=c, x_tenant_id=t), Tenant)
        page = self.step("list products", "get", "/api/v1/products", 200,
                         lambda: list_products.sync_detailed(client=c, x_tenant_id=t, limit=5),
                         PageProduct)
        if page is not None and not all(isinstance(p, Product) for p in page.items):
            self.steps[-1].update(ok=False, problems=["a listed product is not a Product"])
        new = CreateProduct(name="Tee — Ipê print, XL", price_cents=9490, currency="BRL",
                            sku=f"TEE-IPE-XL-{uuid.uuid4().hex[:8]}", stock=12,
                            status=ProductStatus.ACTIVE, description="Organic cotton.")
        product = self.step("create a product", "post", "/api/v1/products", 201,
                            lambda: create_product.sync_detailed(client=c, x_tenant_id=t, body=new),
                            Product, new)
        if product is None:
            return
        self.step("get the product", "get", "/api/v1/products/{id}", 200,
                  lambda: get_product.sync_detailed(product.id, client=c, x_tenant_id=t), Product)
        change = UpdateProduct(price_cents=8990, stock=20)
        self.step("patch the product", "patch", "/api/v1/products/{id}", 200,
                  lambda: update_product.sync_detailed(product.id, client=c, x_tenant_id=t,
                                                       body=change), Product, change)
        order_body = CreateOrder(
            customer=CustomerInput(name="Maria Souza", phone="+5511912345678",
                                   email="maria@example.com"),
            items=[ItemInput(product_id=product.id, quantity=2)],
            channel=Channel.WHATSAPP, notes="Gift wrap, please.")
        order = self.step("place an order", "post", "/api/v1/orders", 201,
                          lambda: create_order.sync_detailed(client=c, x_tenant_id=t,
                                                             body=order_body), Order, order_body)
        pending = self.step("list orders by status", "get", "/api/v1/orders", 200,
                            lambda: list_orders.sync_detailed(client=c, x_tenant_id=t,
                                                              status=OrderStatus.PENDING,
                                                              limit=100), PageOrder)
        if order is None:
            return
        if pending is not None and order.id not in [o.id for o in pending.items]:
            self.steps[-1].update(ok=False, problems=["the new order is not listed as pending"])
        move = Transition(status=OrderStatus.CONFIRMED)
        self.step("move the order on", "post", "/api/v1/orders/{id}/transitions", 200,
                  lambda: transition_order.sync_detailed(order.id, client=c, x_tenant_id=t,
                                                         body=move), Order, move)
        message = PostMessage(customer_handle="+5511912345678", channel=Channel.WHATSAPP,
                              sender_type=SenderType.MERCHANT,
                              message="Your order is confirmed!", order_id=order.id)
        self.step("post a message", "post", "/api/v1/conversations/messages", 201,
                  lambda: post_message.sync_detailed(client=c, x_tenant_id=t, body=message),
                  Message, message)
        threads = self.step("list threads", "get", "/api/v1/conversations", 200,
                            lambda: list_threads.sync_detailed(client=c, x_tenant_id=t),
                            PageThread)
        if threads is not None and not all(isinstance(x, Thread) for x in threads.items):
            self.steps[-1].update(ok=False, problems=["a listed thread is not a Thread"])
        self.step("read usage", "get", "/api/v1/tenant/usage", 200,
                  lambda: tenant_usage.sync_detailed(client=c, x_tenant_id=t), Usage)
        self.step("read quotas", "get", "/api/v1/tenant/quotas", 200,
                  lambda: tenant_quotas.sync_detailed(client=c, x_tenant_id=t), Quotas)


def main():
    base_url, tenant, token, capture = sys.argv[1:5]
    workflow = Workflow(base_url, tenant, token)
    workflow.run()
    with open(capture, "w", encoding="utf-8") as out:
        json.dump(workflow.steps, out, ensure_ascii=False, indent=1, default=str)
    for record in workflow.steps:
        for problem in record["problems"]:
            print(f"python: {record['step']}: {problem}", file=sys.stderr)
    return 0 if len(workflow.steps) == 12 and all(s["ok"] for s in workflow.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
