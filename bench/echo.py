"""The floor for publish -> accepted: a plain MQTT client that, for each request, appends it
to a file, fdatasyncs it, then answers through the same broker. What any agent that
records a command durably before answering must at least spend.

    .venv/bin/python -m bench.echo --port PORT --prefix PREFIX --record FILE
"""

import argparse
import json
import os
import socket
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args()
    record = os.open(args.record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    request_topic = f"{args.prefix}/echo/cmd"

    def on_socket_open(client: mqtt.Client, userdata: Any, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def on_connect(client: mqtt.Client, *_: Any) -> None:
        client.subscribe(request_topic, qos=1)

    def on_subscribe(client: mqtt.Client, *_: Any) -> None:
        client.publish(f"{args.prefix}/echo/ready", b"1", qos=1, retain=True)

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        os.write(record, message.payload + b"\n")
        os.fdatasync(record)
        request = json.loads(message.payload)
        answer = {"id": request["id"], "status": "accepted", "job": request["id"]}
        client.publish(f"{args.prefix}/response", json.dumps(answer).encode(), qos=1)

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"echo-{os.getpid()}", protocol=mqtt.MQTTv5
    )
    client.on_socket_open = on_socket_open
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", args.port)
    client.loop_forever()


if __name__ == "__main__":
    main()
