"""The peer: what a user of the Python original would deploy for process_message's job on
Lambda. boto3's client is built at import (in init, as the AWS docs advise); each message is
parsed and written to DynamoDB with one conditional PutItem, and a reply is returned. It does
less than the Rust function (no detection, no decision), which only flatters it."""

import json
import os
import time

import boto3

TABLE = os.environ["TABLE_NAME"]
DYNAMODB = boto3.client("dynamodb")


def handler(event, context):
    try:
        body = json.loads(event.get("body") or "")
        text = str(body["text"])
        message_id = str(body["message_id"])
    except (ValueError, KeyError, TypeError):
        return {"statusCode": 400, "body": json.dumps({"error": {"code": "invalid_json"}})}
    tenant = event["requestContext"]["authorizer"]["jwt"]["claims"]["tenant_id"]
    conversation = event["rawPath"].split("/")[2]
    DYNAMODB.put_item(
        TableName=TABLE,
        Item={
            "pk": {"S": f"PY#{tenant}#C#{conversation}"},
            "sk": {"S": f"M#{message_id}"},
            "text": {"S": text},
            "at": {"N": str(time.time_ns() // 1_000_000)},
        },
        ConditionExpression="attribute_not_exists(pk)",
    )
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"conversation_id": conversation, "reply": "Thanks, tell me more."}),
    }
