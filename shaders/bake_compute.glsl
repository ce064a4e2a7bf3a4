#version 430 core
// Compute form of bake.glsl (keep the two in step): one invocation per texel of the UV layout's texel
// map (uv_map.glsl) interpolates the frame's vertex positions and normals, weighs the view exactly as
// bake.glsl does and adds (rgb * w, w) * gain into the float accumulator in place: a plain sum, or
// with u_moving_average the exponential moving average of blending (ONE, ONE_MINUS_SRC_ALPHA).
// No rasteriser or blender involved: only texels of the layout that were seen are written.

#if defined COMPUTE_SHADER

layout(local_size_x = 8, local_size_y = 8) in;

layout(rgba32f, binding = 0) uniform image2D u_accum;
layout(std430, binding = 0) readonly buffer Positions { float b_position[]; };  // xyz per vertex
layout(std430, binding = 1) readonly buffer Normals { float b_normal[]; };
layout(std430, binding = 2) readonly buffer Triangles { int b_triangle[]; };

uniform sampler2D u_map;     // texel map: (b1, b2, triangle, 1)
uniform sampler2D u_frame;   // the image, row 0 = top
uniform sampler2D u_depth;   // camera-view depth map, row 0 = top, nearest filtering
uniform vec2 u_frame_size;
uniform vec2 u_depth_range;
uniform float u_depth_bias;
uniform float u_min_facing;
uniform float u_weight_power;
uniform float u_gain;
uniform bool u_moving_average;

vec3 position(int i) { return vec3(b_position[3 * i], b_position[3 * i + 1], b_position[3 * i + 2]); }
vec3 normal(int i) { return vec3(b_normal[3 * i], b_normal[3 * i + 1], b_normal[3 * i + 2]); }

void main() {
    ivec2 p = ivec2(gl_GlobalInvocationID.xy);
    if (any(greaterThanEqual(p, imageSize(u_accum)))) {
        return;
    }
    vec4 m = texelFetch(u_map, p, 0);
    if (m.a < 0.5) {
        return;  // outside the UV layout
    }
    int t = 3 * int(m.z + 0.5);
    ivec3 i = ivec3(b_triangle[t], b_triangle[t + 1], b_triangle[t + 2]);
    vec3 b = vec3(1.0 - m.x - m.y, m.x, m.y);
    vec3 v_pos = b.x * position(i.x) + b.y * position(i.y) + b.z * position(i.z);
    vec3 v_normal = b.x * normal(i.x) + b.y * normal(i.y) + b.z * normal(i.z);

    vec2 st = (v_pos.xy + 0.5) / u_frame_size;
    float facing = -normalize(v_normal).z;
    float depth = (v_pos.z - u_depth_range.x) * u_depth_range.y;
    bool inside = all(greaterThanEqual(st, vec2(0.0))) && all(lessThanEqual(st, vec2(1.0)));
    float slope = sqrt(max(1.0 - facing * facing, 0.0)) / max(facing, 1e-3);
    float bias = u_depth_bias + 1.5 * slope * u_depth_range.y;
    bool visible = inside && facing > u_min_facing && depth <= textureLod(u_depth, st, 0.0).r + bias;
    if (!visible) {
        return;  // w = 0 adds nothing to the sum and keeps the moving average as it is
    }
    float w = pow(facing, u_weight_power);
    vec4 src = vec4(textureLod(u_frame, st, 0.0).rgb * w, w) * u_gain;
    vec4 dst = imageLoad(u_accum, p);
    imageStore(u_accum, p, u_moving_average ? src + dst * (1.0 - src.a) : src + dst);
}

#endif
