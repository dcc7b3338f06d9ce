"""Drive SVI Storyboard headless with gradio_client: create a project, lay out three prompts, render,
retake clip 2, export the mp4. See docs/api.md.

    python app.py &                                   # the app on http://127.0.0.1:7860
    python docs/api_example.py --url http://127.0.0.1:7860/ --image assets/examples/start.png
"""

from __future__ import annotations

import argparse
import sys

from gradio_client import Client, handle_file


def follow(client: Client, project: str) -> dict:
    """Print the job's progress until it ends; render_status long-polls (no busy loop)."""
    status = client.predict(project, 0, 0, api_name="/render_status")
    while status["status"] in ("queued", "loading", "running"):
        print(" ", status["progress"], file=sys.stderr)
        status = client.predict(project, status["rev"], 30, api_name="/render_status")
    print(" ", status["progress"], file=sys.stderr)
    return status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:7860/")
    ap.add_argument("--image", default="assets/examples/start.png", help="start image")
    ap.add_argument("--name", default="api example", help="project name")
    ap.add_argument("--steps", type=int, default=4, help="denoising steps per clip")
    args = ap.parse_args()
    client = Client(args.url, verbose=False)

    # 1. A project from a start image (named uniquely if the name is taken by a previous run)
    existing = {p["name"] for p in client.predict(api_name="/list_projects")}
    name = args.name if args.name not in existing else f"{args.name} {len(existing)}"
    name = client.predict(handle_file(args.image), name, api_name="/create_project")

    # 2. Settings and three prompts, one per clip: clip edges come from the model's grid
    tl = client.predict(name, api_name="/get_timeline")
    tl = client.predict(name, tl["version"], {"steps": args.steps}, api_name="/set_settings")
    F, m, fps = tl["F"], tl["m"], tl["fps"]
    edges = [0.0] + [(F + k * (F - m)) / fps for k in range(3)]
    texts = ["a red circle bounces on a beach at noon", "the circle rolls towards the sea",
             "the sun sets over the sea"]
    prompts = [{"start": edges[k], "end": edges[k + 1], "text": t} for k, t in enumerate(texts)]
    tl = client.predict(name, tl["version"], {"prompt": prompts, "audio": [], "pose": []}, api_name="/set_timeline")
    plan = client.predict(name, api_name="/clip_plan")
    print(plan["estimate"], file=sys.stderr)

    # 3. Render every clip; then retake clip 2 (index 1) with a new random seed
    client.predict(name, api_name="/render")
    follow(client, name)
    client.predict(name, 1, None, None, api_name="/retake")
    follow(client, name)
    for clip in client.predict(name, api_name="/clips"):
        print(f"  clip {clip['index'] + 1}: {clip['status']}, {clip['takes']} take(s)", file=sys.stderr)

    # 4. Clip 3 is stale after the retake: render it again, then export the final mp4
    client.predict(name, api_name="/render")
    follow(client, name)
    video = client.predict(name, api_name="/export_video")
    path = video["video"] if isinstance(video, dict) else video
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
